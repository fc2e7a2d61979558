"""The Pod Security Standard "restricted" (which deploy/base/namespace.yaml enforces), as every pod of the project
must pass it: the pods of the Dagster deployment (tests/test_deploy.py) and the pods KubeRay builds from the
RayCluster (tests/test_raycluster.py)."""

UID = 10001  # the user of deploy/Dockerfile

# Volume types the "restricted" Pod Security Standard admits.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def assert_hardened(pod: dict, where: str) -> None:
    """"restricted", with each setting written out on the pod AND on every container, plus a read-only root
    filesystem with a writable emptyDir /tmp as $HOME."""
    psc = pod.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID, (where, psc)
    assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, (where, psc)
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), (where, flag)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        assert set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES, (where, v)
    for c in pod["containers"] + pod.get("initContainers", []) + pod.get("ephemeralContainers", []):
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True and sc.get("runAsUser") == UID, (where, c["name"], sc)
        assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"], sc)
        assert not sc.get("privileged"), (where, c["name"], sc)
        assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"], sc)
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), (where, sc)
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, (where, c["name"], sc)
        assert not any(p.get("hostPort") for p in c.get("ports", [])), where
        (tmp,) = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]] and not tmp.get("readOnly"), (where, tmp)
        assert {"name": "HOME", "value": "/tmp"} in c.get("env", []), where
