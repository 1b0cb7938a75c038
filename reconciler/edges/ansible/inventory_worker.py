"""The inventory child: parses ONE Ansible inventory in a fresh interpreter and prints plain JSON.

Run only by ``edges.ansible.inventory_process`` as
``python -I -m reconciler.edges.ansible.inventory_worker`` with a JSON request on stdin, in a
private working directory and an environment the parent built (``ANSIBLE_INVENTORY_ENABLED``:
the plugins allowed, ``ANSIBLE_CONFIG``: an empty file...): none of the daemon's memory (its
secrets) is in this process. Nobody imports this module (import-linter forbids it); it imports
only the standard library, PyYAML and Ansible (and this package's light ``__init__``).

Contract:

* The address-space limit (``RLIMIT_AS``) of the request is set before anything is parsed
  (or the lower one this process inherited); failing to set it fails the parse.
* Before Ansible sees them, the YAML files listed in the request are composed (not
  constructed) and rejected when their aliases expand to too many nodes (an alias bomb) or
  they nest too deep; vault-encrypted files are not looked into here.
* Variables are read, never templated. Vault: secrets are read by Ansible from the password
  files named in the request (a file name, never the secret, crosses the process boundary).
  A vault-encrypted vars file is decrypted as Ansible reads it; an inline ``!vault`` value only
  when it is ``ansible_host`` or ``deploy_app_ports``. Errors located in a decrypted file are
  withheld (only file and line are told). Without a secret, vault-encrypted vars files are
  skipped and vaulted values are treated as absent.
* Output, on the original stdout (Ansible's own printing goes to stderr), one JSON document:
  ``{"format": 1, "groups": {group: [host...]}, "hosts": {host: {"address": str, "ports":
  {app: int}}}, "vaulted": bool}`` (``vaulted``: a value above came from a vault, or a vaulted
  file could not be read, so the result must not be stored) with exit status 0; or
  ``{"format": 1, "error": {"message": str, "file": str | null, "line": int | null}}`` with
  exit status 1. Out of memory: exit status 3 (nothing may be printable any more).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Mapping
from typing import Any

FORMAT = 1
EXIT_ERROR = 1
EXIT_MEMORY = 3
#: An alias may make a document this many times bigger than it is written (plus a floor).
ALIAS_EXPANSION_RATIO = 100
ALIAS_EXPANSION_FLOOR = 1_000_000
#: Deeper YAML nesting is refused (real inventories nest a handful of levels).
MAX_DEPTH = 200
_NEEDED = ("ansible_host", "deploy_app_ports")


class Rejected(Exception):
    """A problem of the inventory itself, with where it is."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file, self.line = file, line


def _nodes_check(path: str) -> None:
    """Refuse alias bombs and deep nesting without building the document (PyYAML composer)."""
    import yaml

    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data.lstrip().startswith(b"$ANSIBLE_VAULT"):
            return
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        documents = list(yaml.compose_all(data, Loader=loader))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return  # not YAML (an INI file...): Ansible reports what is wrong with it
    except RecursionError:
        raise Rejected(f"nesting deeper than {MAX_DEPTH} levels", path) from None
    for document in documents:
        if document is not None:
            _expansion_check(path, document)


def _expansion_check(path: str, root: Any) -> None:
    """Expanded size of every node (aliases counted each time they are used), iteratively."""
    import yaml

    size: dict[int, int] = {}
    distinct = 0
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if id(node) in size:
            continue
        if depth > MAX_DEPTH:
            raise Rejected(
                f"nesting deeper than {MAX_DEPTH} levels", path, node.start_mark.line + 1
            )
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            distinct += 1
            continue
        children = (
            [item for pair in node.value for item in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            distinct += 1
            total = 1 + sum(size[id(child)] for child in children)
            size[id(node)] = total
            if total > ALIAS_EXPANSION_FLOOR + ALIAS_EXPANSION_RATIO * distinct:
                raise Rejected(
                    f"YAML aliases expand to {total:,} values here (an alias bomb?)",
                    path,
                    node.start_mark.line + 1,
                )
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in size)


def _origin(exc: BaseException) -> tuple[str | None, int | None]:
    """File and line of an error: ours (INI), else the best Origin Ansible tagged on it."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - older ansible-core
        Origin = None
    found: list[tuple[str | None, int | None]] = []
    for current in _chain(exc):
        where = getattr(current, "reconciler_where", None)
        if where is not None:
            return str(where[0]) if where[0] else None, where[1]
        obj = getattr(current, "obj", None)
        if Origin is None or obj is None:
            continue
        origin = obj if isinstance(obj, Origin) else Origin.get_tag(obj)
        if origin is not None and origin.path:
            found.append((str(origin.path), origin.line_num))
    with_line = [item for item in found if item[1]]
    return (with_line or found or [(None, None)])[0]


def _message(exc: BaseException) -> str:
    """The first line of the error and of up to three causes, without repeats."""
    parts: list[str] = []
    for current in _chain(exc)[:4]:
        text = getattr(current, "_original_message", None) or str(current)
        line = (str(text).strip().splitlines() or [""])[0].strip().rstrip(".")
        if line and not any(line.lower() in part.lower() for part in parts):
            parts.append(line)
    return ": ".join(parts) or type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    found, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _best_failure(failures: list[tuple[str, BaseException]], source: str) -> BaseException | None:
    """Of the plugins that tried a source, the failure that explains it best."""
    for _plugin, exc in failures:
        if any(isinstance(e, MemoryError | RecursionError) for e in _chain(exc)):
            return exc
    extension = os.path.splitext(source)[1].lower()
    wanted = {".yml": "yaml", ".yaml": "yaml", ".json": "yaml", ".toml": "toml"}.get(
        extension, "ini"
    )
    for plugin, exc in failures:
        if plugin.rsplit(".", 1)[-1] == wanted:
            return exc
    return failures[-1][1] if failures else None


class _Tracker:
    """What the parse did with vault data, and the plugin failures Ansible only displays."""

    def __init__(self) -> None:
        self.vaulted = False
        self.decrypted: set[str] = set()  # files read decrypted: their errors are withheld
        self.failures: list[tuple[str, BaseException]] = []

    def rejected(self, message: str, file: str | None, line: int | None) -> Rejected:
        if file is not None and os.path.realpath(file) in self.decrypted:
            message = "cannot be parsed (a vault-encrypted file: details withheld)"
        return Rejected(message, file, line)


def _loader(tracker: _Tracker) -> Any:
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import is_encrypted

    class Loader(DataLoader):
        """Skips vault-encrypted files without a secret; notes the files it decrypted, and
        whether one of them sets a value the result holds."""

        def _decrypt_if_vault_data(self, b_data: bytes) -> tuple[bytes, bool]:
            if is_encrypted(b_data) and not self._vault.secrets:
                tracker.vaulted = True
                return b"", False
            return super()._decrypt_if_vault_data(b_data)

        def _get_file_contents(self, file_name: str) -> tuple[bytes, bool]:
            data, plaintext = super()._get_file_contents(file_name)
            if not plaintext:
                tracker.decrypted.add(os.path.realpath(self.path_dwim(file_name)))
            return data, plaintext

        def load_from_file(self, file_name: str, *args: Any, **kwargs: Any) -> Any:
            data = super().load_from_file(file_name, *args, **kwargs)
            decrypted = os.path.realpath(self.path_dwim(file_name)) in tracker.decrypted
            if decrypted and isinstance(data, Mapping) and any(k in data for k in _NEEDED):
                tracker.vaulted = True
            return data

    return Loader()


def _vault(loader: Any, vault: list[list[str]]) -> None:
    from ansible.parsing import vault as ansible_vault

    secrets = []
    for vault_id, path in vault:
        secret = ansible_vault.get_file_vault_secret(
            filename=path, vault_id=vault_id, loader=loader
        )
        secret.load()
        secrets.append((vault_id, secret))
    loader.set_vault_secrets(secrets)
    context = getattr(ansible_vault, "VaultSecretsContext", None)
    if context is not None:  # ansible-core 2.19: EncryptedString decrypts through it
        context.initialize(context(secrets))


def _plain(value: Any, tracker: _Tracker) -> Any:
    """A needed value as plain data; a vaulted one is decrypted here (or absent without a
    secret) and marks the result as not to be stored."""
    kind = type(value).__name__
    if kind in ("EncryptedString", "AnsibleVaultEncryptedUnicode"):
        tracker.vaulted = True
        try:
            return str.__str__(str(value))
        except Exception:  # no secret for it: treated as absent
            return None
    if any(
        type(tag).__name__ == "VaultedValue"
        for tag in getattr(value, "_ansible_tags_mapping", {}).values()
    ):
        tracker.vaulted = True
    if isinstance(value, Mapping):
        return {str(k): _plain(v, tracker) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    return None


def _ports(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    ports: dict[str, int] = {}
    for app, port in value.items():
        try:
            number = int(port)
        except (TypeError, ValueError):
            continue
        if not isinstance(port, bool) and 0 < number < 65536:
            ports[str(app)] = number
    return ports


def _ini_lines() -> None:
    """The INI plugin forgets the line of an error before reporting it: note it on the error."""
    from ansible.plugins.inventory import ini

    original = ini.InventoryModule._parse

    def _parse(self: Any, lines: Any) -> Any:
        try:
            return original(self, lines)
        except Exception as exc:
            origin = getattr(self, "_origin", None)
            where = (
                str(getattr(origin, "path", None) or "") or None,
                getattr(origin, "line_num", None),
            )
            setattr(exc, "reconciler_where", where)  # noqa: B010
            raise

    ini.InventoryModule._parse = _parse


def parse(request: Mapping[str, Any]) -> dict[str, Any]:
    for path in request.get("yaml_files", ()):
        _nodes_check(path)

    from ansible import constants
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.utils.display import Display
    from ansible.vars.manager import VariableManager

    constants.INVENTORY_UNPARSED_IS_FAILED = True
    constants.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    tracker = _Tracker()
    display = Display()
    shown = display.error_as_warning if hasattr(display, "error_as_warning") else None

    def capture(msg: str, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        tracker.failures.append((msg.split("'")[1] if "'" in msg else "", exception))

    if shown is not None:
        display.error_as_warning = capture
    _ini_lines()
    loader = _loader(tracker)
    source = str(request["source"])
    try:
        _vault(loader, request.get("vault", []))
    except AnsibleError as exc:
        raise Rejected(f"vault: {_message(exc)}") from None
    try:
        manager = InventoryManager(loader=loader, sources=[source])
    except AnsibleError as exc:
        best = _best_failure(tracker.failures, source) or exc
        if any(isinstance(e, MemoryError) for e in _chain(best)):
            raise MemoryError from None
        file, line = _origin(best)
        raise tracker.rejected(_message(best), file or source, line) from None
    variables = VariableManager(loader=loader, inventory=manager)
    hosts: dict[str, dict[str, Any]] = {}
    for host in manager.get_hosts(ignore_restrictions=True):
        try:
            host_vars = variables.get_vars(host=host, include_hostvars=False)
            address = _plain(host_vars.get("ansible_host"), tracker)
            ports = _ports(_plain(host_vars.get("deploy_app_ports"), tracker))
        except AnsibleError as exc:
            file, line = _origin(exc)
            raise tracker.rejected(f"host {host.name!r}: {_message(exc)}", file, line) from None
        name = str.__str__(host.name)
        hosts[name] = {"address": str(address) if address else name, "ports": ports}
    groups = {
        str.__str__(name): [str.__str__(h.name) for h in group.get_hosts()]
        for name, group in manager.groups.items()
        if name not in ("all", "ungrouped")
    }
    return {"format": FORMAT, "groups": groups, "hosts": hosts, "vaulted": tracker.vaulted}


def main() -> int:
    request = json.loads(sys.stdin.buffer.read(64 << 20))
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever Ansible prints goes to stderr; stdout carries only the result
    try:
        limit = int(request["memory_bytes"])
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)  # a lower limit inherited from our parent stays
        try:  # prlimit64 (glibc's setrlimit) is in systemd's @system-service filter
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (OSError, ValueError) as exc:  # fail closed: no parse without the bound
            raise Rejected(f"cannot limit the parser's memory: {exc}") from None
        document = parse(request)
        code = 0
    except Rejected as exc:
        document = {
            "format": FORMAT,
            "error": {"message": str(exc), "file": exc.file, "line": exc.line},
        }
        code = EXIT_ERROR
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except RecursionError:
        document = {
            "format": FORMAT,
            "error": {"message": "nesting too deep", "file": request["source"], "line": None},
        }
        code = EXIT_ERROR
    except Exception as exc:  # Ansible raising something that is not an AnsibleError
        message = f"internal error of the parser: {type(exc).__name__}: {exc}"
        document = {"format": FORMAT, "error": {"message": message, "file": None, "line": None}}
        code = EXIT_ERROR
    json.dump(document, out, ensure_ascii=True, separators=(",", ":"))
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
