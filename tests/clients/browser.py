"""The web page in a real browser: Debian's chromium driven by chromedriver
over the WebDriver protocol (plain HTTP, no client library). It enters the API
key, asks a question about an attached image and reads the streamed answer,
then generates an image and checks the progress and the result, against the
reference's golden outputs.

Run by `cargo xtask test` with JANUS_URL, JANUS_API_KEY, JANUS_TESTDATA set;
CHROMIUM / CHROMEDRIVER override /usr/bin/chromium and /usr/bin/chromedriver;
JANUS_SCREENSHOT, if set, is where a screenshot of the page is saved.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from common import GOLDEN, DATA, assert_pixels, png_pixels

URL = os.environ["JANUS_URL"]
KEY = os.environ["JANUS_API_KEY"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    def __init__(self):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        driver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
        self.proc = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.call("GET", "/status")["ready"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        self.profile = tempfile.mkdtemp(prefix="janus-chromium-")
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            "--window-size=1280,900", f"--user-data-dir={self.profile}",
        ]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": os.environ.get("CHROMIUM", "/usr/bin/chromium"), "args": args},
        }}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read().decode()}") from None

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css, text):
        self.s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script, what, timeout=120):
        """Polls `script` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main():
    d = WebDriver()
    try:
        d.go(URL + "/")
        # The server has a key: the page asks for it.
        d.wait("return getComputedStyle(document.getElementById('key-box')).display !== 'none'", "the key box")
        d.type("#api-key", KEY)
        d.click("#key-save")
        d.wait("return document.getElementById('status').textContent.startsWith('ready')", "ready")

        # The whole chat goes with each question: the page keeps only the
        # latest images within the server's limit (read from /health).
        assert d.js("return maxImages") == 8, d.js("return maxImages")
        kept = d.js("""
            maxImages = 2;
            const img = (u) => ({type: 'image_url', image_url: {url: u}});
            const h = [{role: 'user', content: [img('a'), img('b'), {type: 'text', text: 'q1'}]},
                       {role: 'assistant', content: 'x'},
                       {role: 'user', content: [img('c'), {type: 'text', text: 'q2'}]}];
            const r = withinImageLimit(h);
            maxImages = 8;
            return r.map((m) => Array.isArray(m.content)
                ? m.content.map((p) => p.type === 'text' ? p.text : p.image_url.url).join(',')
                : m.content);""")
        assert kept == ["b,q1", "x", "c,q2"], kept

        # A question about an attached image; the answer streams in.
        conv = GOLDEN["prompts"]["pro"]["und_one_image"]["messages"][0]
        und = GOLDEN["understanding"]["und_one_image"]
        question = conv["content"].replace("<image_placeholder>", "", 1)
        d.type("#chat-file", os.path.realpath(os.path.join(DATA, "images", conv["images"][0])))
        d.wait("return document.querySelectorAll('#attachments img').length === 1", "the attachment")
        d.js("document.getElementById('chat-max').value = arguments[0]", und["generate_flags"]["max_new_tokens"])
        # The golden question starts with a newline, which typing would send early.
        d.js("document.getElementById('chat-input').value = arguments[0]", question)
        d.click("#chat-send")
        d.wait("return document.querySelector('.msg.assistant.done')", "the answer")
        answer = d.js("return document.querySelector('.msg.assistant .text').textContent")
        chunks = int(d.js("return document.querySelector('.msg.assistant').dataset.chunks || '0'"))
        assert answer == und["greedy_text_skip_special"], (answer, und["greedy_text_skip_special"])
        assert chunks > 1, f"the answer arrived in {chunks} piece(s), not streamed"
        shown = d.js("return document.querySelectorAll('.msg.user img').length")
        assert shown == 1, "the sent image is not shown in the history"

        # A refused request: the error shows, the question goes back into the
        # composer (not left in the log without being in the history).
        d.js("document.getElementById('chat-max').value = 999999")
        d.js("document.getElementById('chat-input').value = 'again?'")
        d.click("#chat-send")
        d.wait("return document.querySelector('.msg.error')", "the error")
        error = d.js("return document.querySelector('.msg.error').textContent")
        assert "max_tokens" in error, error
        assert d.js("return document.getElementById('chat-input').value") == "again?"
        users = d.js("return document.querySelectorAll('.msg.user').length")
        assert users == 1, f"{users} questions in the log"

        # Page logic against answers the server would not give on its own:
        # the page's fetch is wrapped to hand out queued stand-ins first.
        d.js("""
            window.realFetch = window.fetch;
            window.stubs = [];
            window.fetch = (url, opts) => window.stubs.length
                ? Promise.resolve(window.stubs.shift()(url, opts)) : window.realFetch(url, opts);
            // As a real response's body: cut by the request's abort signal.
            window.sse = (chunks, keepOpen, opts) => new Response(new ReadableStream({start(c) {
                for (const t of chunks) c.enqueue(new TextEncoder().encode(t));
                if (!keepOpen) c.close();
                else opts.signal.addEventListener('abort',
                    () => c.error(new DOMException('aborted', 'AbortError')));
            }}), {status: 200, headers: {'content-type': 'text/event-stream'}});""")
        d.js("document.getElementById('chat-max').value = 2")

        def ask(stub, text):
            """Queues `stub` (a JS function of the request) and sends `text`."""
            d.js(f"stubs.push({stub})")
            d.js("document.getElementById('chat-input').value = arguments[0]", text)
            d.click("#chat-send")

        turns = d.js("return history.length")
        assert turns == 2, turns
        # Past the context, the oldest exchange is left out and the question
        # goes again.
        ask("""() => new Response(JSON.stringify({error: {message: 'too long',
            code: 'context_length_exceeded'}}), {status: 400})""", "short?")
        d.wait("return !chatAbort && document.querySelectorAll('.msg.assistant.done').length === 2", "the retried answer")
        notice = d.js("return [...document.querySelectorAll('.msg.error')].map((m) => m.textContent).join('|')")
        assert "no longer fit the model's context" in notice, notice
        assert d.js("return history.length") == 2, d.js("return history")
        # A stream that ends without [DONE] is an error, not a whole answer.
        ask("""() => sse(['data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\\n\\n'])""", "cut?")
        d.wait("return !chatAbort && document.getElementById('chat-input').value === 'cut?'", "the cut answer")
        last = d.js("const e = document.querySelectorAll('.msg.error'); return e[e.length - 1].textContent")
        assert "closed before the answer was complete" in last, last
        assert d.js("return history.length") == 2, d.js("return history")
        # New chat while an answer streams: the old answer stays out of it.
        ask("""(url, opts) => sse(['data: {"choices":[{"index":0,"delta":{"content":"old"}}]}\\n\\n'], true, opts)""", "old question")
        d.wait("return document.querySelector('.msg.assistant.streaming')", "the streaming answer")
        d.click("#chat-clear")
        d.wait("return !chatAbort && !document.getElementById('chat-send').disabled", "the send button back")
        assert d.js("return history.length") == 0, d.js("return history")
        d.js("window.fetch = window.realFetch")
        # A key a header cannot carry is refused in the page, the old one kept.
        d.js("document.getElementById('api-key').value = 'k\u200b'")
        d.js("document.getElementById('key-save').click()")
        status = d.js("return document.getElementById('status').textContent")
        assert "printable ASCII" in status, status
        assert d.js("return apiKey") == KEY
        # Attachments are buttons (removable from the keyboard).
        d.js("attachments = ['data:image/png;base64,AAAA']; showAttachments()")
        assert d.js("return document.querySelectorAll('#attachments button img').length") == 1
        d.js("document.querySelector('#attachments button').click()")
        assert d.js("return attachments.length") == 0
        # A phone-sized photo goes scaled to 1536 pixels, as a JPEG; a small
        # image goes byte for byte.
        d.js("""
            window.scaled = null;
            const canvas = (w, h) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
                const g = c.getContext('2d'); g.fillStyle = '#3a7'; g.fillRect(0, 0, w, h);
                g.fillStyle = '#a33'; g.fillRect(0, 0, w / 2, h / 2); return c; };
            Promise.all([canvas(4000, 3000), canvas(40, 30)].map((c) => new Promise((r) => c.toBlob(r, 'image/png'))))
              .then(async ([big, small]) => {
                await addFiles([new File([big], 'photo.png', {type: 'image/png'}),
                                new File([small], 'small.png', {type: 'image/png'})]);
                const im = new Image(); im.src = attachments[0]; await im.decode();
                window.scaled = [attachments.length, attachments[0].slice(0, 23), im.naturalWidth,
                                 im.naturalHeight, attachments[1] === await dataUrlOf(small)];
              }).catch((e) => { window.scaled = String(e); });""")
        scaled = d.wait("return window.scaled", "the scaled attachment")
        assert scaled == [2, "data:image/jpeg;base64,", 1536, 1152, True], scaled
        d.js("attachments = []; showAttachments()")
        # A transparent big PNG's transparent areas go white (they were black);
        # a small JPEG tagged with an EXIF rotation goes upright, as shown; an
        # image over its share of the body limit goes as a JPEG; a question
        # sent while a photo is being scaled carries it.
        d.js("""
            window.more = null;
            const pixel = async (url) => { const im = new Image(); im.src = url; await im.decode();
                const c = document.createElement('canvas'); c.width = im.naturalWidth; c.height = im.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(im, 0, 0);
                return [im.naturalWidth, im.naturalHeight, ...g.getImageData(c.width - 2, c.height - 2, 1, 1).data]; };
            const blob = (c, type) => new Promise((r) => c.toBlob(r, type, 0.9));
            const clear = document.createElement('canvas'); clear.width = 3000; clear.height = 2000;
            clear.getContext('2d').fillRect(0, 0, 100, 100);
            const small = document.createElement('canvas'); small.width = 40; small.height = 20;
            small.getContext('2d').fillRect(0, 0, 40, 20);
            const noisy = document.createElement('canvas'); noisy.width = 600; noisy.height = 600;
            const px = noisy.getContext('2d').createImageData(600, 600);
            let x = 2463534242;  // xorshift32: noise no PNG filter predicts
            for (let i = 0; i < px.data.length; i++) {
                x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
                px.data[i] = i % 4 === 3 ? 255 : x & 255;
            }
            noisy.getContext('2d').putImageData(px, 0, 0);
            Promise.all([blob(clear, 'image/png'), blob(small, 'image/jpeg'), blob(noisy, 'image/png')])
              .then(async ([alpha, jpeg, big]) => {
                // EXIF orientation 6 (turned 90 degrees), spliced in after SOI.
                const exif = new Uint8Array([0xFF, 0xE1, 0, 34, 0x45, 0x78, 0x69, 0x66, 0, 0,
                    0x4D, 0x4D, 0, 0x2A, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0,
                    0, 0, 0, 0]);
                const bytes = new Uint8Array(await jpeg.arrayBuffer());
                const turned = new Blob([bytes.slice(0, 2), exif, bytes.slice(2)], {type: 'image/jpeg'});
                await addFiles([new File([alpha], 'a.png', {type: 'image/png'}),
                                new File([turned], 't.jpg', {type: 'image/jpeg'})]);
                const out = [await pixel(attachments[0]), await pixel(attachments[1])];
                attachments = [];
                const keep = maxBodyBytes;
                maxBodyBytes = 2e6;
                await addFiles([new File([big], 'noisy.png', {type: 'image/png'})]);
                out.push(big.size > fileBudget(), attachments[0].slice(0, 15));
                maxBodyBytes = keep;
                attachments = [];
                window.more = out;
              }).catch((e) => { window.more = String(e); });""")
        more = d.wait("return window.more", "the attachments' checks")
        assert more[0] == [1536, 1024, 255, 255, 255, 255], more
        assert more[1][:2] == [20, 40], more
        assert more[2:] == [True, "data:image/jpeg"], more
        d.js("""
            window.sentBody = null;
            const realFetch = window.fetch;
            window.fetch = (url, opts) => { window.fetch = realFetch; window.sentBody = JSON.parse(opts.body);
                return Promise.resolve(new Response('data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\\n\\ndata: [DONE]\\n\\n',
                    {status: 200, headers: {'content-type': 'text/event-stream'}})); };
            const c = document.createElement('canvas'); c.width = 4000; c.height = 3000;
            c.getContext('2d').fillRect(0, 0, 10, 10);
            c.toBlob((b) => { addFiles([new File([b], 'late.png', {type: 'image/png'})]);
                document.getElementById('chat-input').value = 'what is this?'; sendChat(); }, 'image/png');""")
        sent = d.wait("return window.sentBody", "the question sent while scaling")
        parts = sent["messages"][-1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"], parts
        assert parts[0]["image_url"]["url"].startswith("data:image/jpeg"), parts[0]["image_url"]["url"][:40]
        d.wait("return !chatAbort && document.querySelectorAll('.msg.assistant.done').length >= 1", "the stand-in answer")
        d.click("#chat-clear")
        # An empty image prompt is asked for, not replaced by the example.
        d.js("document.getElementById('img-prompt').value = ''")
        d.click("#img-go")
        status = d.js("return document.getElementById('img-status').textContent")
        assert status == "error: write a prompt first", status

        # An image: progress, previews, the result in the gallery.
        gen = GOLDEN["image_generation"]
        prompt = GOLDEN["prompts"]["pro"]["image_generation"]["messages"][0]["content"]
        d.js("document.getElementById('img-prompt').value = arguments[0]", prompt)
        # A seed past 2^53 would reach the server rounded, as a float: refused here.
        d.js("document.getElementById('img-seed').value = '123456789012345678901234'")
        d.click("#img-go")
        status = d.js("return document.getElementById('img-status').textContent")
        assert status.startswith("error: the seed must be a whole number"), status
        for field, value in [("img-n", 1), ("img-cfg", gen["cfg_weight"]), ("img-temp", 0), ("img-seed", 1)]:
            d.js(f"document.getElementById('{field}').value = arguments[0]", value)
        d.click("#img-go")
        d.wait("return document.querySelector('#gallery figure img')", "the generated image")
        steps = gen["image_token_num_per_image"]
        progress = d.js("const p = document.getElementById('img-progress'); return [p.value, p.max, Number(p.dataset.events || 0)]")
        assert progress == [steps, steps, steps], progress
        previews = int(d.js("return document.getElementById('previews').dataset.count || '0'"))
        assert previews == 2, f"{previews} previews"
        src = d.js("return document.querySelector('#gallery figure img').src")
        link = d.js("return document.querySelector('#gallery figure a').download")
        assert link.endswith(".png"), link
        w, h, px = png_pixels(base64.b64decode(src.split(",", 1)[1]))
        assert (w, h) == (gen["img_size"], gen["img_size"])
        # n = 1 with the reference's prompt and cfg: its first argmax image.
        assert_pixels("gen.argmax.img_u8", px, first=1)
        status = d.js("return document.getElementById('img-status').textContent")
        assert "1 of 1" in status, status
        shot = os.environ.get("JANUS_SCREENSHOT")
        if shot:
            d.screenshot(shot)
    finally:
        d.quit()
    print("browser: key, chat with an attached image (streamed), a refused request, the history's image limit, context trimming, a cut stream, New chat mid-answer, a bad key, keyboard attachments, photos scaled (upright, transparent areas white, within the body limit, waited for), image generation (empty prompt, seed check, progress, previews, gallery): ok")


if __name__ == "__main__":
    sys.exit(main())
