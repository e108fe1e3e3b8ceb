"""Languages and locale formatting: the browser's choice, the switch, Vietnamese numbers
and weekdays in the site's time zone, and a catalogue that covers every template."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pharos.console.i18n import VI, Formatter, negotiate, translate

TEMPLATES = Path(__file__).resolve().parents[3] / "pharos" / "console" / "templates"
SAIGON = ZoneInfo("Asia/Ho_Chi_Minh")


def test_the_language_is_the_chosen_one_else_the_browsers_else_vietnamese() -> None:
    assert negotiate("en-US,en;q=0.9", None) == "en"
    assert negotiate("fr-FR,vi;q=0.8,en;q=0.5", None) == "vi"
    assert negotiate("fr;q=1,en;q=0.2,vi;q=0.9", None) == "vi"
    assert negotiate("de", None) == "vi"
    assert negotiate(None, None) == "vi"
    assert negotiate("en", "vi") == "vi"
    assert negotiate("vi", "en") == "en"
    assert negotiate("en;q=abc,vi", "xx") == "vi"  # a bad quality counts as 0
    assert negotiate("," * 10_000 + "en", None) == "vi"  # only the first 20 entries


def test_vietnamese_numbers_and_weekdays() -> None:
    vi, en = Formatter("vi", SAIGON), Formatter("en", SAIGON)
    assert vi.unit(1234.5, "kWh") == "1.234,5\u00a0kWh"
    assert en.unit(1234.5, "kWh") == "1,234.5\u00a0kWh"
    assert vi.number(70719.4, 0) == "70.719"
    assert vi.number(None) == "–"
    assert vi.weekday(date(2026, 12, 4)) == "Thứ Sáu"
    assert vi.day(date(2026, 12, 4)) == "Thứ Sáu, 4 tháng 12, 2026"
    assert en.weekday(date(2026, 12, 4)) == "Friday"


def test_times_are_shown_in_the_sites_time_zone() -> None:
    vi = Formatter("vi", SAIGON)
    late_utc = datetime(2026, 12, 4, 17, 30, tzinfo=UTC)  # 00:30 on Saturday in Cần Thơ
    assert vi.time(late_utc) == "00:30"
    assert vi.weekday(late_utc) == "Thứ Bảy"


def test_every_text_the_templates_translate_has_its_vietnamese() -> None:
    used: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([^"']+)["']\s*\)""", template.read_text()))
    assert len(used) > 80
    missing = sorted(text for text in used if text not in VI)
    assert missing == []
    assert translate("vi", "Commissioning") == "Nghiệm thu"
    assert translate("en", "Commissioning") == "Commissioning"
