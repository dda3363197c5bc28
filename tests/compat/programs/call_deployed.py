"""Calls the deployed `compat-deployed` app by name, as a separate program would."""

import urllib.request

import modal

shout = modal.Function.from_name("compat-deployed", "shout")
assert shout.remote("hi") == "HI!"
url = modal.Server.from_name("compat-deployed", "Site").get_url()
with urllib.request.urlopen(url, timeout=60) as r:
    assert r.status == 200
print("COMPAT OK call_deployed")
