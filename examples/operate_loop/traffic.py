"""Traffic for the hand-run loop (docs/operate.md): short informal posts (unlike BBC articles), each answered,
then rated; a wrong answer gets a correction. Usage: python traffic.py API_KEY PORT"""
import sys
from collections import Counter

import httpx

POSTS = [("lol my phone battery died again after the update", "tech"),
         ("who else thinks the new console is overpriced", "tech"),
         ("wifi down all morning, router keeps rebooting", "tech"),
         ("this app crashes every time i open the camera", "tech"),
         ("what a goal in the last minute, unreal match", "sports"),
         ("ref was blind tonight, we were robbed", "sports"),
         ("marathon training day 40, legs are gone", "sports"),
         ("tennis final going to a fifth set!!", "sports"),
         ("petrol prices up again, my wallet is crying", "business"),
         ("my shares tanked after the earnings call", "business"),
         ("rent went up 20% this year, insane", "business"),
         ("small shop on my street just closed down", "business"),
         ("that new series finale was so good", "entertainment"),
         ("concert tickets sold out in two minutes", "entertainment"),
         ("the sequel is worse than the first film", "entertainment"),
         ("who is hosting the awards show this year", "entertainment"),
         ("voted this morning, queue was huge", "politics"),
         ("the minister dodged every question again", "politics"),
         ("new tax rules explained in one thread", "politics"),
         ("parliament debate last night was chaos", "politics")]

key, port = sys.argv[1], sys.argv[2]
answers = Counter()
with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                  timeout=120) as c:
    for rnd in range(2):
        for text, label in POSTS:
            r = c.post("/v1/chat/completions", json={"model": "production", "max_tokens": 4,
                                                     "messages": [{"role": "user", "content": text}]})
            r.raise_for_status()
            body = r.json()
            said = body["choices"][0]["message"]["content"]
            right = said.strip().lower() == label
            answers[right] += 1
            fb = {"request_id": body["id"], "rating": 1 if right else -1}
            if not right:
                fb["correction"] = label
            c.post("/v1/feedback", json=fb).raise_for_status()
            if rnd == 0 and sum(answers.values()) <= 5:  # a few examples
                print(f"{body['model']}: {text!r} -> {said!r} (want {label})")
print(f"{sum(answers.values())} requests to {body['model']}: {answers[True]} right, {answers[False]} corrected")
