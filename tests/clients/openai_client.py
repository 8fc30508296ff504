"""The official `openai` Python client against a running `janus serve` on the
tiny reference checkpoint: models, chat (whole and streamed, with an image),
images.generate (whole and streamed). Answers are checked against the
reference's golden outputs.

Run by `cargo xtask test` with JANUS_URL (the server), JANUS_API_KEY and
JANUS_TESTDATA (the janus-tiny folder) set.
"""

import base64
import os
import sys

from openai import OpenAI, APIStatusError

from common import GOLDEN, assert_pixels, data_url, png_pixels

URL = os.environ["JANUS_URL"]
KEY = os.environ["JANUS_API_KEY"]


def main():
    client = OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=300)

    # Without the key: 401, as OpenAI's client reports it.
    try:
        OpenAI(base_url=URL + "/v1", api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except APIStatusError as e:
        assert e.status_code == 401, e

    models = client.models.list()
    assert len(models.data) == 1, models
    model = models.data[0].id

    # Chat about an image, whole and streamed.
    conv = GOLDEN["prompts"]["pro"]["und_one_image"]["messages"][0]
    text = conv["content"].replace("<image_placeholder>", "", 1)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(conv["images"][0])}},
                {"type": "text", "text": text},
            ],
        }
    ]
    want = GOLDEN["understanding"]["und_one_image"]["greedy_text_skip_special"]
    flags = GOLDEN["understanding"]["und_one_image"]["generate_flags"]
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=flags["max_new_tokens"], temperature=0
    )
    assert r.choices[0].message.content == want, (r.choices[0].message.content, want)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == flags["max_new_tokens"], r.usage
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=flags["max_new_tokens"],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(pieces) == want
    assert finish == "length"
    assert usage.total_tokens == r.usage.total_tokens, (usage, r.usage)

    # A multi-turn text chat.
    turns = GOLDEN["prompts"]["pro"]["text_only"]["messages"]
    history = [
        {"role": "user" if "User" in m["role"] else "assistant", "content": m["content"]}
        for m in turns
        if m["content"]
    ]
    r = client.chat.completions.create(model=model, messages=history, max_tokens=24)
    assert r.choices[0].message.content == GOLDEN["understanding"]["text_only"]["greedy_text_skip_special"]

    # Images: the reference's argmax images, whole and streamed.
    gen = GOLDEN["image_generation"]
    size = f"{gen['img_size']}x{gen['img_size']}"
    prompt = GOLDEN["prompts"]["pro"]["image_generation"]["messages"][0]["content"]
    extra = {"cfg_weight": gen["cfg_weight"], "temperature": 0}
    result = client.images.generate(
        model=model,
        prompt=prompt,
        n=gen["parallel_size"],
        size=size,
        response_format="b64_json",
        extra_body=extra,
    )
    images = []
    for d in result.data:
        w, h, px = png_pixels(base64.b64decode(d.b64_json))
        assert (w, h) == (gen["img_size"], gen["img_size"])
        images.append(px)
    assert_pixels("gen.argmax.img_u8", b"".join(images))

    events = client.images.generate(
        model=model, prompt=prompt, n=1, size=size, stream=True, partial_images=1, extra_body=extra
    )
    kinds = []
    completed = None
    for e in events:
        kinds.append(e.type)
        if e.type == "image_generation.completed":
            completed = base64.b64decode(e.b64_json)
    assert "image_generation.partial_image" in kinds, kinds
    assert kinds[-1] == "image_generation.completed", kinds
    # Only the event types the client knows (progress events are opt-in).
    assert set(kinds) == {"image_generation.partial_image", "image_generation.completed"}, kinds
    assert png_pixels(completed)[2] == images[0], "the streamed image differs"

    # A square size other than the model's: the same image, resized.
    bigger = client.images.generate(model=model, prompt=prompt, n=1, size="512x512", extra_body=extra)
    w, h, _ = png_pixels(base64.b64decode(bigger.data[0].b64_json))
    assert (w, h) == (512, 512), (w, h)

    # An OpenAI-shaped error surfaces as the client's exception.
    try:
        client.images.generate(model=model, prompt=prompt, size="1792x1024")
        raise AssertionError("an unsupported size was accepted")
    except APIStatusError as e:
        assert e.status_code == 400 and "size" in str(e), e
    print("openai client: models, chat (whole, streamed, image, multi-turn), images (whole, streamed, resized), errors: ok")


if __name__ == "__main__":
    sys.exit(main())
