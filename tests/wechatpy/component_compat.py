"""The simulator answers wechatpy's WeChatComponent, a widely used third-party platform client,
as WeChat's Open Platform would: ticket pushes it opens and keeps, the component token, pre-auth
codes, the authorized push it exchanges (query_auth), token refreshes and the authorizer list.

Run by scripts/test.sh: python3 tests/wechatpy/component_compat.py PATH/TO/wxcourier
"""

import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sim_compat import control, free_port
from wechatpy.component import WeChatComponent
from wechatpy.exceptions import WeChatClientException

COMPONENT, SECRET = "wxcomponentcompat1", "component-secret"
TOKEN = "component-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
AUTHORIZER = "wxauthorizercompat"


def component_for(base):
    class SimComponent(WeChatComponent):
        API_BASE_URL = base + "/cgi-bin"

    return SimComponent(COMPONENT, SECRET, TOKEN, AES_KEY)


class EventUrl:
    """The platform's authorization event URL: every push goes through wechatpy's own
    parse_message (which decrypts it, keeps a ticket, and exchanges an authorization code)."""

    def __init__(self, component):
        self.messages, self.errors = [], []
        self.lock = threading.Lock()
        events = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                try:
                    msg = component.parse_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
                    with events.lock:
                        events.messages.append(msg)
                except Exception as e:  # what wechatpy could not take is the finding
                    with events.lock:
                        events.errors.append(repr(e))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"success")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/event"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, kind, seconds=10):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                found = [m for m in self.messages if m.type == kind]
                if found:
                    return found[-1]
            time.sleep(0.05)
        return None


def main(binary):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    component = component_for(base)
    events = EventUrl(component)
    spec = f"{COMPONENT}={SECRET},{TOKEN},{AES_KEY},{events.url}"
    sim = subprocess.Popen(
        [binary, "sim", "--listen", f"127.0.0.1:{port}", "--platform", spec],
        stderr=subprocess.DEVNULL,
    )
    failures, passed = [], []

    def check(name, cond):
        print(("ok   " if cond else "FAIL ") + name)
        (passed if cond else failures).append(name)

    try:
        for _ in range(100):
            try:
                control(base, "/sim/stats")
                break
            except OSError:
                time.sleep(0.05)

        control(base, "/sim/platform/ticket", {"component_appid": COMPONENT})
        ticket = events.wait_for("component_verify_ticket")
        check("a ticket push opens and parses as wechatpy's ComponentVerifyTicketMessage", ticket is not None)
        check("wechatpy keeps the pushed ticket", component.component_verify_ticket is not None)

        token = component.fetch_access_token()
        check("the component token comes with the kept ticket", bool(token.get("component_access_token")))

        pre = component.create_preauthcode()
        check("a pre-auth code is issued", str(pre.get("pre_auth_code", "")).startswith("preauthcode@@@"))
        link = component.get_pre_auth_url("https://example.com/back")
        check("the authorization link carries the code", "pre_auth_code=preauthcode" in link)

        control(base, "/sim/platform/authorize", {"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER})
        authorized = events.wait_for("authorized")
        info = getattr(authorized, "query_auth_result", {}).get("authorization_info", {})
        check(
            "an authorized push parses, and wechatpy exchanges its code (query_auth)",
            info.get("authorizer_appid") == AUTHORIZER and bool(info.get("authorizer_refresh_token")),
        )
        refresh = component.session.get(f"{AUTHORIZER}_refresh_token")
        check("wechatpy keeps the authorizer's refresh token", refresh == info.get("authorizer_refresh_token"))

        refreshed = component.refresh_authorizer_token(AUTHORIZER, refresh)
        check(
            "a refresh gives a new authorizer token and the refresh token to keep",
            bool(refreshed.get("authorizer_access_token")) and refreshed.get("authorizer_refresh_token") == refresh,
        )
        client = component.get_client_by_appid(AUTHORIZER)
        check("wechatpy builds the authorizer's client", client.appid == AUTHORIZER)

        listed = component.get_authorizer_list()
        rows = {r["authorizer_appid"]: r for r in listed.get("list", [])}
        check(
            "the authorizer list names it with its refresh token",
            listed.get("total_count") == 1 and rows.get(AUTHORIZER, {}).get("refresh_token") == refresh,
        )

        control(base, "/sim/platform/authorize", {"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER})
        updated = events.wait_for("updateauthorized")
        check("a second authorization parses as updateauthorized", updated is not None)
        try:
            component.refresh_authorizer_token(AUTHORIZER, refresh)
            check("the replaced refresh token is refused", False)
        except WeChatClientException as e:
            check("the replaced refresh token is refused with 61023", e.errcode == 61023)

        control(base, "/sim/platform/unauthorize", {"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER})
        gone = events.wait_for("unauthorized")
        check("a withdrawal parses as unauthorized, naming the authorizer", gone is not None and gone.authorizer_appid == AUTHORIZER)

        bad = component_for(base)
        bad.session.set("component_verify_ticket", "ticket@@@never-issued")
        try:
            bad.fetch_access_token()
            check("a ticket WeChat never issued is refused", False)
        except WeChatClientException as e:
            check("a ticket WeChat never issued is refused with 61006", e.errcode == 61006)
        check("no push failed to parse in wechatpy", not events.errors)
        for e in events.errors:
            print("     " + e)
    finally:
        sim.terminate()
        sim.wait(10)
        events.server.shutdown()
    print(f"{len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
