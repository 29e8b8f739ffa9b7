"""Take the README's screenshots of the web page (needs actorflow[ui], playwright and
Debian's chromium): python docs/screenshots.py"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actorflow as af  # noqa: E402
import actorflow.ui  # noqa: E402
from tests.ui_support import (  # noqa: E402
    Decision,
    agent,
    approval,
    chromium,
    gated,
    napper,
    parked,
    serving,
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page shows the path it was given: a short one
        async with af.Runtime("agent.db") as rt:
            await rt.start(agent, "build/cache.bin", id="agent-7f3a")
            await rt.start(agent, "~/Downloads/old.zip", id="agent-91c2")
            await rt.start(napper, id="digest-weekly")
            done = await rt.start(agent, "tmp/scratch.txt", id="agent-5d10")
            await rt.start(gated, id="deploy-gate")
            for instance in ("agent-7f3a", "agent-91c2", "digest-weekly", "agent-5d10"):
                await parked(rt, instance)
            await rt.send(done.id, approval, Decision(approved=False, note="keep it"))
            await done.result(timeout=5)
            ui = actorflow.ui.app(rt)
            async with serving(ui) as base, chromium() as browser:
                for name, width, height in (("desktop", 1100, 560), ("phone", 390, 760)):
                    page = await browser.new_page(viewport={"width": width, "height": height})
                    await page.goto(ui.url(base))
                    await page.wait_for_selector("#live.on")
                    await page.screenshot(path=str(HERE / f"ui-list-{name}.png"))
                    await page.goto(base + "/instance?id=agent-7f3a")
                    await page.wait_for_selector("#live.on")
                    await page.screenshot(
                        path=str(HERE / f"ui-instance-{name}.png"), full_page=name == "desktop"
                    )
                    await page.close()


if __name__ == "__main__":
    asyncio.run(main())
