"""``pharos groups`` against a real SQLite registry, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from devices.registry.db import make_engine, make_session_factory
from devices.registry.models import AuditEntry
from tests.pharos.test_cli import LAMP, env, failed, migrated, ok

__all__ = ["env", "migrated"]  # the fixtures, shared with the devices CLI tests

INVENTORY = """id,kind,name,rated_power_w,groups
sl-1,streetlight,Đèn 1,150,hoa-binh;lights-ninh-kieu
sl-2,streetlight,Đèn 2,150,hoa-binh
sl-3,streetlight,Đèn 3,150,
"""


def test_create_list_show_add_remove(migrated: dict[str, str]) -> None:
    out = ok("groups", "create", "hoa-binh", "--name", "Đại lộ Hòa Bình", "--type", "street",
             "--district", "Ninh Kiều")  # fmt: skip
    assert "created group hoa-binh (Đại lộ Hòa Bình)" in out
    ok("devices", "add", "sl-1", *LAMP)
    ok("devices", "add", "sl-2", *LAMP)
    assert "hoa-binh: 2 devices added" in ok("groups", "add", "hoa-binh", "sl-1", "sl-2")
    assert "(1 already members)" in ok("groups", "add", "hoa-binh", "sl-1")
    listed = ok("groups", "list")
    assert listed.splitlines()[1].split()[:4] == ["hoa-binh", "street", "2", "Ninh"]
    shown = ok("groups", "show", "hoa-binh")
    assert "members:     2" in shown and "sl-1" in shown and "sl-2" in shown
    assert "hoa-binh: 1 devices removed" in ok("groups", "remove", "hoa-binh", "sl-2")
    data = json.loads(ok("groups", "show", "hoa-binh", "--json"))
    assert data["group"]["device_count"] == 1
    assert [d["id"] for d in data["members"]["items"]] == ["sl-1"]
    assert json.loads(ok("devices", "show", "sl-2", "--json"))["groups"] == []
    engine = make_engine(migrated["PHAROS_DATABASE__URL"])
    with make_session_factory(engine)() as session:
        actions = list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    engine.dispose()
    assert actions.count("group.create") == 1
    assert actions.count("device.update") == 3  # two added, one removed: each audited


def test_unknown_names_fail_and_change_nothing(migrated: dict[str, str]) -> None:
    ok("groups", "create", "hoa-binh", "--name", "HB")
    ok("devices", "add", "sl-1", *LAMP)
    assert "no device 'sl-404'" in failed(1, "groups", "add", "hoa-binh", "sl-1", "sl-404")
    assert json.loads(ok("groups", "show", "hoa-binh", "--json"))["group"]["device_count"] == 0
    assert "no group 'nope'" in failed(1, "groups", "show", "nope")
    assert "no group 'nope'" in failed(1, "groups", "add", "nope", "sl-1")
    assert "already exists" in failed(1, "groups", "create", "hoa-binh", "--name", "again")
    assert "GROUP: String should match pattern" in failed(
        2, "groups", "create", "Bad Id", "--name", "x"
    )


def test_a_fresh_database_imports_an_inventory_that_names_groups(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(INVENTORY, encoding="utf-8")
    error = failed(1, "devices", "import", str(inventory))
    assert "groups missing (2): hoa-binh, lights-ninh-kieu; create them first:" in error
    assert "pharos groups create hoa-binh --name 'hoa-binh'" in error
    assert "0 of 0 groups" not in ok("groups", "list")  # the hint did not create them
    ok("groups", "create", "hoa-binh", "--name", "HB")
    ok("groups", "create", "lights-ninh-kieu", "--name", "Ninh Kiều")
    assert "3 created" in ok("devices", "import", str(inventory))
    assert json.loads(ok("groups", "show", "hoa-binh", "--json"))["group"]["device_count"] == 2
