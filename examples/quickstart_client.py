"""The official openai SDK talking to the quick-start sidecar: apps name a feature as `model`."""

import openai

client = openai.OpenAI(base_url="http://127.0.0.1:4000/v1", api_key="unused: the sidecar holds the keys")

reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Say hello"}])
print("chat:", reply.choices[0].message.content)

print("chat (stream): ", end="")
for chunk in client.chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "Say hello"}], stream=True
):
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

raw = client.chat.completions.with_raw_response.create(
    model="recap", messages=[{"role": "user", "content": "Summarise"}]
)
print(
    "recap: answered by", raw.headers["x-spillway-endpoint"],
    "after", raw.headers["x-spillway-attempts"], "attempts:", raw.parse().choices[0].message.content,
)
