"""``meshbot demo``: the whole bot in a browser, with the two outside worlds replaced by embedded ones.

- ``cluster``     the bundled outage in kmock's Kubernetes emulator, served over HTTP on loopback;
- ``controller``  makes that cluster react to the bot's actions (rollouts, sidecars, Ready istiod);
- ``workspace``   an embedded Slack: the Web API the bot calls, and signed requests into the bot;
- ``console``     the web page people use instead of the Slack client;
- ``run``         puts them together around the real bot (``bot.server.wiring.build``).

Needs the ``demo`` extra (kmock).
"""
