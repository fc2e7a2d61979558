import os
import types

import pytest

from resources.store import ObjectStore


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """The same test on a local root (real files) and on the loopback S3 server (moto): `.kind`, `.store` (an
    ObjectStore for the root, assembling local writes in a staging directory beside it), `.root` (a fresh root)."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return types.SimpleNamespace(
            kind="s3",
            store=ObjectStore(endpoint_url=endpoint),
            endpoint=endpoint,
            root=f"s3://curation/{request.node.name.replace('[', '-').rstrip(']')}-{os.urandom(4).hex()}",
        )
    root = tmp_path / "data"
    return types.SimpleNamespace(
        kind="local", store=ObjectStore(staging_dir=str(tmp_path / ".data.staging")), endpoint=None, root=str(root)
    )
