"""Reads a NoCloud seed directory with cloud-init's own code (Debian's cloud-init package)
and prints what cloud-init makes of it as JSON: the meta-data and network-config as the
NoCloud datasource loads them, the interfaces cloud-init's network_state derives, the
user-data's parts after cloud-init's MIME processing, the cloud-config that cloud-init's
part handler merges from them, and the schema check of that cloud-config.

Usage: python3 nocloud_check.py SEED_DIR
"""
import json
import sys
import tempfile

from cloudinit import handlers, helpers, util
from cloudinit import user_data as ud
from cloudinit.config.schema import get_schema, validate_cloudconfig_schema
from cloudinit.handlers.cloud_config import CloudConfigPartHandler
from cloudinit.net.network_state import parse_net_config_data
from cloudinit.sources.DataSourceNoCloud import _merge_new_seed


def main(seed_dir):
    seeded = util.pathprefix2dict(
        seed_dir,
        required=["user-data", "meta-data"],
        optional=["vendor-data", "network-config"],
    )
    data = _merge_new_seed({"meta-data": {}}, seeded)
    ns = parse_net_config_data(data["network-config"])
    interfaces = [
        {"name": i.get("name"), "mac": i.get("mac_address"), "subnets": i.get("subnets")}
        for i in ns.iter_interfaces()
    ]

    paths = helpers.Paths({"cloud_dir": tempfile.mkdtemp()})
    msg = ud.UserDataProcessor(paths).process(data["user-data"])
    parts = []
    handler = CloudConfigPartHandler(paths)
    handler.handle_part(None, handlers.CONTENT_START, None, None, None, None)

    def callback(_data, filename, payload, headers):
        ctype = headers["Content-Type"]
        parts.append({"type": ctype, "payload": payload})
        if ctype == "text/cloud-config":
            handler.handle_part(None, ctype, filename, payload, None, headers)

    handlers.walk(msg, callback, {})
    merged = handler.cloud_buf or {}
    try:
        validate_cloudconfig_schema(merged, get_schema(), strict=True, log_details=False)
        schema = "ok"
    except Exception as e:  # SchemaValidationError, or anything else: report it
        schema = str(e)
    print(json.dumps({
        "meta_data": data["meta-data"],
        "network_config": data["network-config"],
        "interfaces": interfaces,
        "parts": parts,
        "cloud_config": merged,
        "schema": schema,
    }, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
