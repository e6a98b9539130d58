"""The simulator answers wechatpy, a widely used third-party WeChat client, as WeChat would.

Run by scripts/test.sh: python3 tests/wechatpy/sim_compat.py PATH/TO/wxcourier
"""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wechatpy import WeChatClient, parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.events import EVENT_TYPES
from wechatpy.exceptions import WeChatClientException

APPID, SECRET = "wx0000000000000000", "secret"
OPENID = "oia2TjuEGTNoeX76QEjQNrcURxG8"
TEMPLATE = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY"
CALLBACK_TOKEN = "compat-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_for(base):
    class SimClient(WeChatClient):
        API_BASE_URL = base + "/cgi-bin/"

        def fetch_access_token(self):
            # wechatpy hard-codes WeChat's host for the token call; only the host changes.
            return self._fetch_access_token(
                url=base + "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            )

    return SimClient(APPID, SECRET)


def control(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


class Pushes:
    """A callback that answers every push `success` and keeps what it got."""

    def __init__(self):
        self.got = []
        self.lock = threading.Lock()
        pushes = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                with pushes.lock:
                    pushes.got.append((query, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"success")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, seconds=10):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.05)
        with self.lock:
            return list(self.got)


def check_pushes(base, client, check):
    """The simulator's sealed pushes open with wechatpy's WeChatCrypto and parse with its
    parse_message: a follow event as wechatpy's own event type, and the subscription events
    wherever the installed wechatpy knows them."""
    pushes = Pushes()
    control(base, "/sim/callback", {
        "appid": APPID,
        "target": {"url": pushes.url, "token": CALLBACK_TOKEN, "aes_key": AES_KEY},
    })
    decider = "o" + "p" * 27
    control(base, "/sim/event", {
        "appid": APPID, "touser": decider, "event": "subscribe_msg_popup_event",
        "templates": [{"template_id": TEMPLATE, "status": "reject", "scene": 2}],
    })
    control(base, "/sim/event", {"appid": APPID, "touser": decider, "event": "unsubscribe"})
    typed = {"thing1": {"value": "ok"}}
    client.message.send_subscribe_message(OPENID, TEMPLATE, typed)
    got = pushes.wait(3)
    control(base, "/sim/callback", {"appid": APPID, "target": None})
    crypto = WeChatCrypto(CALLBACK_TOKEN, AES_KEY, APPID)
    events = {}
    for query, body in got:
        xml = crypto.decrypt_message(body, query["msg_signature"], query["timestamp"], query["nonce"])
        message = parse_message(xml)
        events[message._data.get("Event")] = message
    check("three sealed pushes open with wechatpy's WeChatCrypto", len(got) == 3 and len(events) == 3)
    unfollow = events.get("unsubscribe")
    check(
        "an unsubscribe push parses as wechatpy's UnsubscribeEvent from the user",
        type(unfollow).__name__ == "UnsubscribeEvent" and unfollow.source == decider,
    )
    for name, field in [("subscribe_msg_popup_event", "SubscribeStatusString"), ("subscribe_msg_sent_event", "ErrorCode")]:
        event = events.get(name)
        if name not in EVENT_TYPES:
            print(f"skip {name}: this wechatpy does not know it (it parses as {type(event).__name__})")
            continue
        items = event.subscribes
        check(f"a {name} push parses in wechatpy with its list item", len(items) == 1 and field in items[0])


def main(binary):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    failures, passed = [], []
    try:
        for _ in range(100):
            try:
                control(base, "/sim/stats")
                break
            except OSError:
                time.sleep(0.05)
        client = client_for(base)
        data = {"first": {"value": "hello", "color": "#173177"}, "keyword1": {"value": "1842"}}

        def check(name, cond):
            print(("ok   " if cond else "FAIL ") + name)
            (passed if cond else failures).append(name)

        sent = client.message.send_template(OPENID, TEMPLATE, data, url="https://example.com/1")
        check("a template send is accepted with a msgid", sent.get("errcode") == 0 and sent.get("msgid", 0) > 0)

        try:
            client.message.send_template("oBad", TEMPLATE, data)
            check("an invalid OpenID is refused", False)
        except WeChatClientException as e:
            check("an invalid OpenID is refused with 40003", e.errcode == 40003)

        control(base, "/sim/invalidate", {"appid": APPID})
        again = client.message.send_template(OPENID, TEMPLATE, data)
        stats = control(base, "/sim/stats")["apps"][APPID]
        check("after invalidation wechatpy refreshes on 40001 and succeeds", again.get("errcode") == 0)
        check("exactly two token calls in all", stats["classic_token_calls"] == 2)

        # Subscription notifications (service account) and mini-program subscribe messages.
        typed = {"thing1": {"value": "您的餐品已备好"}, "number2": {"value": "1842"}, "time3": {"value": "15:01"}}
        notified = client.message.send_subscribe_message(OPENID, TEMPLATE, typed, page="pages/order")
        check("a bizsend subscription notification is accepted", notified.get("errcode") == 0)
        try:
            client.message.send_subscribe_message(OPENID, TEMPLATE, {"thing1": {"value": "x" * 21}})
            check("a thing value over 20 characters is refused", False)
        except WeChatClientException as e:
            check(
                "a thing value over 20 characters is refused with 47003 naming the field",
                e.errcode == 47003 and "data.thing1.value" in (e.errmsg or ""),
            )
        # wechatpy sends mini-program calls to WeChat's host: point them at the simulator.
        client.wxa.API_BASE_URL = base + "/"
        mp = client.wxa.send_subscribe_message(OPENID, TEMPLATE, typed, page="pages/index")
        check("a mini-program subscribe message is accepted", mp.get("errcode") == 0)
        try:
            client.wxa.send_subscribe_message(OPENID, TEMPLATE, {"number1": {"value": "twelve"}})
            check("a number value that is not digits is refused", False)
        except WeChatClientException as e:
            check(
                "a number value that is not digits is refused with 47003 naming the field",
                e.errcode == 47003 and "data.number1.value" in (e.errmsg or ""),
            )
        kinds = sorted({s["kind"] for s in control(base, "/sim/sends")})
        check("each send was recorded under its kind", kinds == ["miniprogram_subscribe", "subscribe", "template"])

        # The account's templates: wechatpy's client.template.get_all_private_template().
        check(
            "an account without a template list lists none",
            client.template.get_all_private_template().get("template_list") == [],
        )
        listed = [
            {
                "template_id": TEMPLATE,
                "title": "订单支付成功",
                "primary_industry": "IT科技",
                "deputy_industry": "互联网|电子商务",
                "content": "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n{{remark.DATA}}",
                "example": "订单号：1842",
            }
        ]
        control(base, "/sim/templates", {"appid": APPID, "template_list": listed})
        got = client.template.get_all_private_template()
        check("the template list comes back as set, content and all", got.get("template_list") == listed)
        try:
            client.message.send_template(OPENID, "notInTheList", data)
            check("a template_id not in the list is refused", False)
        except WeChatClientException as e:
            check("a template_id not in the list is refused with 40037", e.errcode == 40037)

        # The daily quota: wechatpy has no method for openapi/quota/get, so through client.post.
        def quota(path):
            return client.post("openapi/quota/get", data={"cgi_path": path})

        q = quota("/cgi-bin/message/template/send")
        check(
            "quota/get counts the two accepted template sends against the daily limit",
            q.get("errcode") == 0
            and q["quota"] == {"daily_limit": 1000000, "used": 2, "remain": 999998},
        )
        check(
            "quota/get counts each endpoint on its own",
            quota("/cgi-bin/message/subscribe/bizsend")["quota"]["used"] == 1,
        )
        try:
            quota("/cgi-bin/no/such/api")
            check("an unknown cgi_path is refused", False)
        except WeChatClientException as e:
            check("an unknown cgi_path is refused with 76021", e.errcode == 76021)

        refuser = "o" + "r" * 27
        control(base, "/sim/refuse", {"touser": refuser})
        try:
            client.message.send_template(refuser, TEMPLATE, data)
            check("a user who refused is refused", False)
        except WeChatClientException as e:
            check("a user who refused is refused with 43101", e.errcode == 43101)

        check_pushes(base, client, check)

        control(base, "/sim/quota", {"appid": APPID, "left": 0})
        try:
            client.message.send_template(OPENID, TEMPLATE, data)
            check("a spent quota is refused", False)
        except WeChatClientException as e:
            check("a spent quota is refused with 45009", e.errcode == 45009)

        bad = client_for(base)
        bad.secret = "wrong"
        try:
            bad.fetch_access_token()
            check("a wrong secret is refused", False)
        except WeChatClientException as e:
            check("a wrong secret is refused with 40125", e.errcode == 40125)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    print(f"{len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
