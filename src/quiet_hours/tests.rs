//! The window and its end: across midnight, at the exact boundaries, in zones other than the
//! machine's, across the clock changes of `America/New_York` and on the DST-free
//! `Asia/Shanghai`; then the reading of the keys and the spread.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn quiet(window: &str, zone: &str) -> QuietHours {
    QuietHours {
        window: QuietWindow::parse(window).unwrap(),
        zone: Zone::named(zone).unwrap(),
    }
}

/// The end of the quiet hours holding at `now` (UTC text), as UTC text.
fn end(hours: &QuietHours, now: &str) -> Option<String> {
    hours
        .end_if_quiet(at(now))
        .map(|t| t.format(&Rfc3339).unwrap())
}

#[test]
fn a_window_across_midnight_ends_the_next_morning_or_the_same_one() {
    let shanghai = quiet("22:00-08:00", "Asia/Shanghai");
    // 23:30 local on 1 March: the end is 08:00 on 2 March.
    assert_eq!(
        end(&shanghai, "2026-03-01T15:30:00Z").as_deref(),
        Some("2026-03-02T00:00:00Z")
    );
    // 03:00 local on 2 March: the end is the same morning.
    assert_eq!(
        end(&shanghai, "2026-03-01T19:00:00Z").as_deref(),
        Some("2026-03-02T00:00:00Z")
    );
    // Noon: not quiet.
    assert_eq!(end(&shanghai, "2026-03-01T04:00:00Z"), None);
}

#[test]
fn a_window_within_one_day_ends_that_day() {
    let lunch = quiet("12:00-14:00", "Asia/Shanghai");
    assert_eq!(
        end(&lunch, "2026-03-01T04:30:00Z").as_deref(),
        Some("2026-03-01T06:00:00Z")
    );
    assert_eq!(end(&lunch, "2026-03-01T03:59:59Z"), None);
    assert_eq!(end(&lunch, "2026-03-01T06:00:00Z"), None);
    assert_eq!(end(&lunch, "2026-03-01T15:00:00Z"), None);
}

#[test]
fn the_start_is_quiet_and_the_end_is_not() {
    let shanghai = quiet("22:00-08:00", "Asia/Shanghai");
    // 21:59:59 and 22:00:00 local.
    assert_eq!(end(&shanghai, "2026-03-01T13:59:59Z"), None);
    assert_eq!(
        end(&shanghai, "2026-03-01T14:00:00Z").as_deref(),
        Some("2026-03-02T00:00:00Z")
    );
    // 07:59:59 local: one second left. 08:00:00: over.
    assert_eq!(
        end(&shanghai, "2026-03-01T23:59:59Z").as_deref(),
        Some("2026-03-02T00:00:00Z")
    );
    assert_eq!(end(&shanghai, "2026-03-02T00:00:00Z"), None);
    // A fraction of a second before the end is still quiet.
    let nearly = at("2026-03-01T23:59:59.999Z");
    assert!(shanghai.end_if_quiet(nearly).is_some());
}

#[test]
fn the_window_is_read_in_its_zone_not_the_machines() {
    // 14:00 UTC is 22:00 in Shanghai and 23:00 in Tokyo (quiet), 14:00 in UTC (not).
    let now = "2026-03-01T14:00:00Z";
    assert_eq!(end(&quiet("22:00-08:00", "UTC"), now), None);
    assert_eq!(
        end(&quiet("22:00-08:00", "Asia/Tokyo"), now).as_deref(),
        Some("2026-03-01T23:00:00Z")
    );
    assert_eq!(
        end(&quiet("22:00-08:00", "Asia/Shanghai"), now).as_deref(),
        Some("2026-03-02T00:00:00Z")
    );
    // The bundled database, not the machine's: an offset a machine in UTC does not have.
    assert_eq!(
        end(
            &quiet("22:00-08:00", "Asia/Kolkata"),
            "2026-03-01T17:00:00Z"
        )
        .as_deref(),
        Some("2026-03-02T02:30:00Z")
    );
}

#[test]
fn new_york_nights_follow_its_clock_changes() {
    let ny = quiet("22:00-08:00", "America/New_York");
    // 8 March 2026, 02:00 EST becomes 03:00 EDT: from 23:00 EST the night is 8 hours.
    assert_eq!(
        end(&ny, "2026-03-08T04:00:00Z").as_deref(),
        Some("2026-03-08T12:00:00Z")
    );
    // The night before is a standard one: 23:00 EST to 08:00 EST.
    assert_eq!(
        end(&ny, "2026-03-07T04:00:00Z").as_deref(),
        Some("2026-03-07T13:00:00Z")
    );
    // 1 November 2026, 02:00 EDT becomes 01:00 EST: from 23:00 EDT the night is 10 hours.
    assert_eq!(
        end(&ny, "2026-11-01T03:00:00Z").as_deref(),
        Some("2026-11-01T13:00:00Z")
    );
    // The start follows the clock too: 22:00 EDT on 31 October, 22:00 EST on 1 November.
    assert_eq!(end(&ny, "2026-11-01T01:59:59Z"), None);
    assert!(end(&ny, "2026-11-01T02:00:00Z").is_some());
    assert_eq!(end(&ny, "2026-11-02T02:59:59Z"), None);
    assert!(end(&ny, "2026-11-02T03:00:00Z").is_some());
}

#[test]
fn an_end_the_clock_skips_is_the_instant_it_jumps_past() {
    // 02:30 does not exist on 8 March 2026 in New York: at 07:00 UTC 02:00 EST becomes
    // 03:00 EDT, already past the end.
    let ny = quiet("22:00-02:30", "America/New_York");
    assert_eq!(
        end(&ny, "2026-03-08T06:00:00Z").as_deref(),
        Some("2026-03-08T07:00:00Z")
    );
    assert_eq!(
        end(&ny, "2026-03-08T06:59:59Z").as_deref(),
        Some("2026-03-08T07:00:00Z")
    );
    assert_eq!(end(&ny, "2026-03-08T07:00:00Z"), None);
}

#[test]
fn a_start_the_clock_skips_begins_the_quiet_at_the_jump() {
    let ny = quiet("02:30-06:00", "America/New_York");
    assert_eq!(end(&ny, "2026-03-08T06:59:59Z"), None);
    assert_eq!(
        end(&ny, "2026-03-08T07:00:00Z").as_deref(),
        Some("2026-03-08T10:00:00Z")
    );
}

#[test]
fn an_end_the_clock_shows_twice_ends_at_each_showing() {
    // 01:00-02:00 happens twice on 1 November 2026 in New York (EDT, then EST).
    let ny = quiet("22:00-01:30", "America/New_York");
    // 01:00 EDT: over at 01:30 EDT.
    assert_eq!(
        end(&ny, "2026-11-01T05:00:00Z").as_deref(),
        Some("2026-11-01T05:30:00Z")
    );
    // 01:45 EDT: not quiet.
    assert_eq!(end(&ny, "2026-11-01T05:45:00Z"), None);
    // 01:10 EST, the repeated hour: quiet again until 01:30 EST.
    assert_eq!(
        end(&ny, "2026-11-01T06:10:00Z").as_deref(),
        Some("2026-11-01T06:30:00Z")
    );
    assert_eq!(end(&ny, "2026-11-01T06:30:00Z"), None);
}

/// How long the quiet lasts from 23:00 local on each night of 2026, in hours.
fn nights_from_23h(zone: &str) -> Vec<i64> {
    let hours = quiet("22:00-08:00", zone);
    let tz = TimeZone::get(zone).unwrap();
    let mut date = jiff::civil::date(2026, 1, 1);
    let mut lengths = Vec::new();
    while date.year() == 2026 {
        let start = date
            .at(23, 0, 0, 0)
            .to_zoned(tz.clone())
            .unwrap()
            .timestamp();
        let now = to_offset_date_time(start);
        let end = hours.end_if_quiet(now).expect("23:00 is quiet");
        let length = end - now;
        assert_eq!(length.whole_seconds() % 3600, 0, "{date}");
        lengths.push(length.whole_hours());
        date = date.tomorrow().unwrap();
    }
    lengths
}

#[test]
fn every_night_of_a_year_is_nine_hours_from_23h_but_the_two_that_change_the_clock() {
    let ny = nights_from_23h("America/New_York");
    assert_eq!(ny.len(), 365);
    assert_eq!(ny.iter().filter(|&&h| h == 8).count(), 1, "spring forward");
    assert_eq!(ny.iter().filter(|&&h| h == 10).count(), 1, "fall back");
    assert_eq!(ny.iter().filter(|&&h| h == 9).count(), 363);
}

#[test]
fn a_zone_without_daylight_saving_has_the_same_night_all_year() {
    let shanghai = nights_from_23h("Asia/Shanghai");
    assert!(shanghai.iter().all(|&h| h == 9), "{shanghai:?}");
    // On New York's change days too.
    let hours = quiet("22:00-08:00", "Asia/Shanghai");
    assert_eq!(
        end(&hours, "2026-03-07T15:00:00Z").as_deref(),
        Some("2026-03-08T00:00:00Z")
    );
    assert_eq!(
        end(&hours, "2026-10-31T15:00:00Z").as_deref(),
        Some("2026-11-01T00:00:00Z")
    );
}

#[test]
fn windows_are_read_and_shown_as_written() {
    for text in ["22:00-08:00", "00:00-23:59", "12:30-12:31", "23:59-00:00"] {
        assert_eq!(QuietWindow::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(
        QuietWindow::parse(" 22:00 - 08:00 ").unwrap().to_string(),
        "22:00-08:00"
    );
    assert_eq!(
        QuietWindow::parse("22:00-08:00").unwrap().open_each_day(),
        Duration::from_secs(14 * 3600)
    );
    assert_eq!(
        QuietWindow::parse("08:00-22:00").unwrap().open_each_day(),
        Duration::from_secs(10 * 3600)
    );
}

#[test]
fn bad_windows_are_refused_with_the_rule_they_break() {
    for (text, rule) in [
        ("24:00-08:00", "is not a time of day"),
        ("22:60-08:00", "is not a time of day"),
        ("22:00-99:00", "is not a time of day"),
        ("8:00-22:00", "HH:MM-HH:MM"),
        ("22:00", "HH:MM-HH:MM"),
        ("", "HH:MM-HH:MM"),
        ("22:00-08:00-09:00", "HH:MM-HH:MM"),
        ("ten-eight", "HH:MM-HH:MM"),
        ("+1:00-08:00", "HH:MM-HH:MM"),
        ("08:00-08:00", "is empty"),
    ] {
        let e = QuietWindow::parse(text).unwrap_err();
        assert!(e.contains(rule), "{text:?}: {e}");
    }
}

#[test]
fn zones_are_iana_names_from_the_bundled_database() {
    assert_eq!(Zone::default().name(), "Asia/Shanghai");
    assert_eq!(
        Zone::named("America/New_York").unwrap().name(),
        "America/New_York"
    );
    for bad in ["Mars/Olympus", "", "+08:00", "CST-8-ish"] {
        let e = Zone::named(bad).unwrap_err();
        assert!(e.contains("IANA"), "{bad:?}: {e}");
    }
}

#[test]
fn the_spread_is_the_same_for_one_id_and_covers_the_whole_span_across_ids() {
    let spread = Duration::from_secs(600);
    assert_eq!(spread_for("job-1", spread), spread_for("job-1", spread));
    assert_eq!(spread_for("job-1", Duration::ZERO), Duration::ZERO);
    let shares: Vec<Duration> = (0..1000)
        .map(|n| spread_for(&format!("job-{n}"), spread))
        .collect();
    assert!(shares.iter().all(|s| *s < spread));
    // Every minute of the ten gets some of them: no burst at the start.
    for minute in 0..10 {
        let in_it = shares.iter().filter(|s| s.as_secs() / 60 == minute).count();
        assert!((50..=150).contains(&in_it), "minute {minute}: {in_it}");
    }
}
