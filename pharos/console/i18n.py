"""The console's two languages: the message catalogue (English keys, Vietnamese text) and
locale formatting of numbers, dates and times in the site's time zone.

Messages are a small dict (the console has a few hundred words; a gettext toolchain
would add a build step for nothing). Formatting is Babel's CLDR data, so Vietnamese
gets ``1.234,5`` and ``Thứ Sáu`` the way Vietnamese software writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal

Language = Literal["vi", "en"]
LANGUAGES: tuple[Language, ...] = ("vi", "en")
DEFAULT_LANGUAGE: Language = "vi"
_BY_TAG: dict[str, Language] = {"vi": "vi", "en": "en"}

# English text is the key; the value is its Vietnamese.
VI: dict[str, str] = {
    "Pharos console": "Bảng điều khiển Pharos",
    "Sign in": "Đăng nhập",
    "Sign out": "Đăng xuất",
    "API key": "Khóa API",
    "Sign in with the API key you were given; the console acts with its role.": (
        "Đăng nhập bằng khóa API được cấp; bảng điều khiển hoạt động theo vai trò của khóa."
    ),
    "Unknown or revoked API key": "Khóa API không tồn tại hoặc đã bị thu hồi",
    "Your session expired: sign in again.": "Phiên đã hết hạn: hãy đăng nhập lại.",
    "The form expired (CSRF check failed): reload the page and try again.": (
        "Biểu mẫu đã hết hạn (kiểm tra CSRF không đạt): tải lại trang và thử lại."
    ),
    "Signed in as": "Đăng nhập với",
    "role": "vai trò",
    "viewer": "người xem",
    "technician": "kỹ thuật viên",
    "energy_manager": "quản lý năng lượng",
    "operator": "điều hành viên",
    "admin": "quản trị",
    "Home": "Trang chủ",
    "Commissioning": "Nghiệm thu",
    "Lighting programs": "Chương trình chiếu sáng",
    "Energy savings": "Tiết kiệm năng lượng",
    "Alerts": "Cảnh báo",
    "Devices": "Thiết bị",
    "Overrides": "Ghi đè",
    "Language": "Ngôn ngữ",
    "Your role may not do this": "Vai trò của bạn không được phép làm việc này",
    "Allowed roles": "Vai trò được phép",
    "Not found": "Không tìm thấy",
    # commissioning
    "Find a device": "Tìm thiết bị",
    "Device id": "Mã thiết bị",
    "Find": "Tìm",
    "Scan QR code": "Quét mã QR",
    "Stop camera": "Tắt máy ảnh",
    "Camera scanning is not available in this browser: type the id.": (
        "Trình duyệt này không quét được mã: hãy nhập mã thiết bị."
    ),
    "No device with this id": "Không có thiết bị với mã này",
    "Kind": "Loại",
    "Name": "Tên",
    "State": "Trạng thái",
    "Position": "Vị trí",
    "not set": "chưa đặt",
    "Checklist": "Danh mục kiểm tra",
    "Position set": "Đã đặt vị trí",
    "First telemetry seen": "Đã nhận dữ liệu đầu tiên",
    "Self-test acknowledged": "Tự kiểm tra đã xác nhận",
    "Signed off by": "Nghiệm thu bởi",
    "Use my location": "Dùng vị trí của tôi",
    "Save position": "Lưu vị trí",
    "Latitude": "Vĩ độ",
    "Longitude": "Kinh độ",
    "Location is not available on this device.": "Thiết bị này không cung cấp vị trí.",
    "Position saved": "Đã lưu vị trí",
    "Live readings": "Số đo trực tiếp",
    "No reading yet": "Chưa có số đo",
    "online": "trực tuyến",
    "offline": "ngoại tuyến",
    "unknown": "chưa rõ",
    "Last seen": "Lần cuối",
    "Run self-test": "Chạy tự kiểm tra",
    "Self-test": "Tự kiểm tra",
    "Mark installed": "Đánh dấu đã lắp đặt",
    "Sign off as commissioned": "Ký nghiệm thu",
    "Put in service": "Đưa vào vận hành",
    "Refused": "Bị từ chối",
    "Done": "Xong",
    "waiting for the device": "đang chờ thiết bị",
    "Self-test sent": "Đã gửi lệnh tự kiểm tra",
    "The control service is not running in this process.": (
        "Dịch vụ điều khiển không chạy trong tiến trình này."
    ),
    "Power at each step": "Công suất ở từng bước",
    "Map": "Bản đồ",
    "Only lamps and smart poles run a self-test with power steps.": (
        "Chỉ đèn và trụ thông minh tự kiểm tra theo bậc công suất."
    ),
    # lifecycle states
    "registered": "đã đăng ký",
    "installed": "đã lắp đặt",
    "commissioned": "đã nghiệm thu",
    "in_service": "đang vận hành",
    "maintenance": "bảo trì",
    "decommissioned": "ngừng sử dụng",
    # programs
    "Programs": "Chương trình",
    "Calendars": "Lịch",
    "Assignments": "Phân công",
    "Steps": "Các bước",
    "Step": "Bước",
    "At": "Lúc",
    "Event": "Sự kiện",
    "fixed time": "giờ cố định",
    "sunset": "hoàng hôn",
    "sunrise": "bình minh",
    "Offset (min)": "Lệch (phút)",
    "Level (%)": "Mức (%)",
    "Add step": "Thêm bước",
    "Remove": "Xóa",
    "Save program": "Lưu chương trình",
    "Program saved": "Đã lưu chương trình",
    "Night of": "Đêm ngày",
    "Group": "Nhóm",
    "Nights": "Số đêm",
    "Level through the night": "Mức sáng suốt đêm",
    "Projection": "Dự báo",
    "This edit": "Bản sửa này",
    "Current program": "Chương trình hiện tại",
    "Baseline (full power dusk to dawn)": "Nền (toàn công suất từ tối đến sáng)",
    "Energy": "Điện năng",
    "Saved vs baseline": "Tiết kiệm so với nền",
    "Change vs current": "Thay đổi so với hiện tại",
    "Default program": "Chương trình mặc định",
    "Rules": "Quy tắc",
    "dates": "ngày",
    "weekdays": "thứ",
    "from": "từ",
    "to": "đến",
    "Calendar": "Lịch",
    "Target": "Đối tượng",
    "Runs on": "Áp dụng cho",
    "Edit": "Sửa",
    "Lamps of the group": "Đèn của nhóm",
    "Program commands": "Lệnh chương trình",
    "acknowledged": "đã xác nhận",
    "lamps": "đèn",
    "No group runs this program": "Chưa nhóm nào dùng chương trình này",
    # energy
    "Measured vs projected": "Đo được so với dự báo",
    "Week": "Tuần",
    "Projected": "Dự báo",
    "Measured": "Đo được",
    "Baseline": "Nền",
    "Download CSV": "Tải CSV",
    "Weeks": "Số tuần",
    "no measurement": "không có số đo",
    # alerts
    "Open alerts": "Cảnh báo đang mở",
    "All alerts": "Tất cả cảnh báo",
    "Severity": "Mức độ",
    "Rule": "Quy tắc",
    "Device": "Thiết bị",
    "Raised": "Phát sinh",
    "Message": "Nội dung",
    "Acknowledge": "Xác nhận",
    "Close": "Đóng",
    "Comment": "Bình luận",
    "Add comment": "Thêm bình luận",
    "Note": "Ghi chú",
    "History": "Lịch sử",
    "No alerts": "Không có cảnh báo",
    "open": "mở",
    "cleared": "đã hết",
    "closed": "đã đóng",
    "info": "thông tin",
    "minor": "nhẹ",
    "major": "nặng",
    "critical": "nghiêm trọng",
    "raised": "phát sinh",
    "commented": "bình luận",
    "escalated": "leo thang",
    "reopened": "mở lại",
    # devices
    "District": "Quận",
    "Online": "Trực tuyến",
    "Any": "Tất cả",
    "yes": "có",
    "no": "không",
    "Filter": "Lọc",
    "devices": "thiết bị",
    "Twin": "Bản sao số",
    "Reported state": "Trạng thái báo cáo",
    "Last values": "Giá trị gần nhất",
    "Recent readings": "Số đo gần đây",
    "Commands": "Lệnh",
    "Action": "Thao tác",
    "Status": "Tình trạng",
    "Sent": "Đã gửi",
    "Detail": "Chi tiết",
    "Dead letters": "Thư lỗi",
    "Reason": "Lý do",
    "Received": "Nhận lúc",
    "None": "Không có",
    "Groups": "Nhóm",
    "Rated power": "Công suất định mức",
    # overrides
    "Level": "Mức",
    "Minutes": "Phút",
    "Until": "Đến",
    "until cleared": "đến khi bỏ",
    "Set override": "Đặt ghi đè",
    "Clear": "Bỏ",
    "By": "Bởi",
    "Override set": "Đã đặt ghi đè",
    "Override cleared": "Đã bỏ ghi đè",
    "What each page is for": "Công dụng của từng trang",
    "Find a device, set its position, watch its readings, run its self-test, sign it off.": (
        "Tìm thiết bị, đặt vị trí, xem số đo, chạy tự kiểm tra, ký nghiệm thu."
    ),
    "Programs, calendars and assignments; edit steps and see the savings before saving.": (
        "Chương trình, lịch và phân công; sửa các bước và xem mức tiết kiệm trước khi lưu."
    ),
    "Measured against projected savings per group, by week.": (
        "Tiết kiệm đo được so với dự báo theo nhóm, theo tuần."
    ),
    "Acknowledge, comment and close alerts.": "Xác nhận, bình luận và đóng cảnh báo.",
    "Devices with filters and a map; each device's twin, readings, commands.": (
        "Thiết bị có bộ lọc và bản đồ; bản sao số, số đo, lệnh của từng thiết bị."
    ),
    "A level for a group over its program, with an expiry.": (
        "Một mức sáng cho nhóm đè lên chương trình, có thời hạn."
    ),
    "Open alerts now": "Cảnh báo đang mở",
    "Devices online": "Thiết bị trực tuyến",
}

CATALOGUES: dict[Language, dict[str, str]] = {"vi": VI, "en": {}}


def translate(language: Language, text: str) -> str:
    """``text`` in ``language`` (English text is its own translation)."""
    return CATALOGUES[language].get(text, text)


def negotiate(accept_language: str | None, chosen: str | None) -> Language:
    """The language: the one the person chose (cookie), else the browser's first known
    one by quality (``Accept-Language``), else Vietnamese."""
    if chosen is not None and chosen in _BY_TAG:
        return _BY_TAG[chosen]
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower().split("-")[0]))
    for _quality, _index, primary in sorted(ranked):
        if primary in _BY_TAG:
            return _BY_TAG[primary]
    return DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Formatter:
    """Numbers, dates and times for one language, in the site's time zone."""

    language: Language
    timezone: ZoneInfo

    def number(self, value: float | None, decimals: int = 1) -> str:
        if value is None:
            return "–"
        pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
        return format_decimal(value, format=pattern, locale=self.language)

    def unit(self, value: float | None, unit: str, decimals: int = 1) -> str:
        """``1.234,5 kWh`` (a no-break space keeps the unit on the number's line)."""
        return f"{self.number(value, decimals)}\u00a0{unit}"

    def local(self, when: datetime) -> datetime:
        return when.astimezone(self.timezone)

    def weekday(self, day: date | datetime) -> str:
        if isinstance(day, datetime):
            day = self.local(day).date()
        return format_date(day, "EEEE", locale=self.language)

    def day(self, day: date | datetime) -> str:
        """The weekday and date: ``Thứ Sáu, 4 tháng 12, 2026`` / ``Friday, December 4, 2026``."""
        if isinstance(day, datetime):
            day = self.local(day).date()
        return format_date(day, "full", locale=self.language)

    def time(self, when: datetime | None) -> str:
        if when is None:
            return "–"
        return format_time(self.local(when), "HH:mm", locale=self.language)

    def datetime(self, when: datetime | None) -> str:
        if when is None:
            return "–"
        return format_datetime(self.local(when), "short", locale=self.language)
