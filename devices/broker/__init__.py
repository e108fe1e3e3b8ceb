"""Broker access: device secrets, Mosquitto password hashes, the password and ACL files.

The registry decides who may connect; this package turns that into the two files
Mosquitto reads and tells the running broker to reload them.
"""

from devices.broker.files import (
    BrokerAccessWriter,
    BrokerAccount,
    Role,
    reload_broker,
    render_acl_file,
    render_password_file,
    write_broker_files,
)
from devices.broker.hashing import hash_password, new_secret, verify_password

__all__ = [
    "BrokerAccessWriter",
    "BrokerAccount",
    "Role",
    "hash_password",
    "new_secret",
    "reload_broker",
    "render_acl_file",
    "render_password_file",
    "verify_password",
    "write_broker_files",
]
