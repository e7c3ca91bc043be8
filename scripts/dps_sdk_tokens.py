"""Prints the DPS SAS tokens the Azure IoT device SDK for Python (azure-iot-device)
makes, one line per case, with the clock fixed: the reference of tests/dps_sas.rs.

Input (argv[1]): a JSON list of {"id_scope", "registration_id", "key", "group",
"expiry"}. With "group": true the key is an enrollment group's and the device key
is derived from it as the SDK's group-enrollment sample does
(samples/async-hub-scenarios/provision_symmetric_key_group.py, derive_device_key).
The token is the one ProvisioningDeviceClient.create_from_symmetric_key builds for
its MQTT CONNECT, with time.time() fixed so that now + ttl is "expiry".
"""

import base64
import hashlib
import hmac
import json
import sys
from unittest import mock

from azure.iot.device import ProvisioningDeviceClient


def derive_device_key(device_id, group_symmetric_key):
    """The SDK sample's derivation: HMAC-SHA256 of the registration id with the
    base64-decoded group key, base64-encoded."""
    message = device_id.encode("utf-8")
    signing_key = base64.b64decode(group_symmetric_key.encode("utf-8"))
    signed_hmac = hmac.HMAC(signing_key, message, hashlib.sha256)
    device_key_encoded = base64.b64encode(signed_hmac.digest())
    return device_key_encoded.decode("utf-8")


TTL = 3600

for case in json.loads(sys.argv[1]):
    key = case["key"]
    if case["group"]:
        key = derive_device_key(case["registration_id"], key)
    with mock.patch("time.time", return_value=case["expiry"] - TTL):
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host="global.azure-devices-provisioning.net",
            registration_id=case["registration_id"],
            id_scope=case["id_scope"],
            symmetric_key=key,
            sastoken_ttl=TTL,
        )
    print(str(client._pipeline._nucleus.pipeline_configuration.sastoken))
