"""Console benchmark: the program editor's preview (chart and projection of the unsaved
form, posted as the energy manager types) for a district-sized lighting group.

Measured in one run, on a registry of N lamps in one group with the city calendar:

1. the limit: the API's projection of the same group and nights with the same program
   (``control.energy.project_group`` lamp by lamp, what ``/api/v1/energy/projection``
   computes), which the preview must not be slower than;
2. the preview: ``project_program`` (the group as one lamp of its summed power), and the
   whole ``POST /programs/{id}/preview`` through the app (session, CSRF, the group's
   lamps from the registry, both projections, the SVG chart, the HTML).

Prints the figures and one JSON line; never run by the tests:
``.venv/bin/python bench/bench_console.py --lamps 5000 --nights 7``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from control.energy import EnergySettings, project_group
from control.plan import CalendarSpec, Target, TargetType
from control.program import Site, default_program
from control.store import assign, group_devices, save_calendar, save_program
from devices.registry.db import transaction
from devices.registry.models import Device, Group, GroupType
from pharos.api.app import create_app
from pharos.api.routes.energy import group_lamps
from pharos.apikeys import Role, create_api_key
from pharos.console.routes.programs import project_program
from pharos.database import upgrade
from pharos.runtime import build_runtime
from pharos.settings import Settings

GROUP = "lights-bench"


def _timed(work: object, repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lamps", type=int, default=5000)
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    settings = Settings(data_dir=tmp, database={"url": f"sqlite:///{tmp / 'pharos.db'}"})
    runtime = build_runtime(settings)
    upgrade(runtime.engine)
    site = Site(latitude=settings.site.latitude, longitude=settings.site.longitude)
    with transaction(runtime.sessions) as session:
        group = Group(id=GROUP, name="bench", type=GroupType.STREET.value)
        session.add(group)
        for n in range(args.lamps):
            device = Device(
                id=f"lamp-{n:05d}",
                kind="streetlight",
                name=f"lamp {n}",
                state="in_service",
                rated_power_w=60.0 + 30 * (n % 4),
            )
            device.groups = [group]
            session.add(device)
        save_program(session, default_program(), site)
        save_calendar(session, CalendarSpec(id="city", name="City", default_program_id="default"))
        assign(session, Target(TargetType.GROUP, GROUP), "city")
    with transaction(runtime.sessions) as session:
        assert len(group_devices(session, GROUP)) == args.lamps
        lamps = group_lamps(session, GROUP)
        key = create_api_key(session, "bench", Role.ENERGY_MANAGER)
    start = date(2026, 12, 1)
    end = start + timedelta(days=args.nights - 1)
    energy = EnergySettings()
    program = default_program()
    limit = _timed(
        lambda: project_group(GROUP, lamps, start, end, site, energy, program=program),
        args.repeat,
    )
    fast = _timed(
        lambda: project_program(GROUP, lamps, start, end, site, energy, program), args.repeat
    )

    client = TestClient(create_app(runtime), headers={"Accept-Language": "en"})
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    client.post("/login", data={"csrf_token": csrf.group(1), "api_key": key})
    editor = client.get(f"/programs/default?nights={args.nights}&night={start}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', editor.text)
    assert editor.status_code == 200 and token is not None
    form: dict[str, str | list[str]] = {
        "csrf_token": token.group(1),
        "group": GROUP,
        "night": start.isoformat(),
        "nights": str(args.nights),
        "step_kind": ["at" if step.at else str(step.event) for step in program.steps],
        "step_at": [step.at or "" for step in program.steps],
        "step_offset": [str(step.offset_minutes) for step in program.steps],
        "step_level": [str(step.level) for step in program.steps],
    }

    def preview() -> None:
        answer = client.post("/programs/default/preview", data=form)
        assert answer.status_code == 200 and "projection-edited" in answer.text, answer.text

    whole = _timed(preview, args.repeat)
    runtime.close()
    print(f"group of {args.lamps} lamps, {args.nights} nights")
    print(f"limit: API projection lamp by lamp   {limit * 1000:9.1f} ms")
    print(
        f"preview projection (summed power)    {fast * 1000:9.1f} ms  ({limit / fast:,.0f}x faster)"
    )
    print(
        f"whole POST /programs/{{id}}/preview   {whole * 1000:9.1f} ms"
        f"  ({whole / limit:.2f} of the limit)"
    )
    figures = {
        "lamps": args.lamps,
        "nights": args.nights,
        "limit_ms": limit * 1000,
        "projection_ms": fast * 1000,
        "preview_ms": whole * 1000,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
