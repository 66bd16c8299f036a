"""The Modal target as Pulumi components: a named Modal Secret and a deployed Modal app.

Modal has no Pulumi provider, so two dynamic providers do the work:

- `ModalSecretProvider` creates/updates the named Modal Secret from the stack's Pulumi
  secrets (values travel as secret Outputs over the provider's gRPC channel: never in a
  process's arguments or logs; in state only encrypted, as secret outputs).
- `ModalAppProvider` deploys the app for the stack (`components/modal_app`), redeploys only
  when the spec, the app's source (modal_app + wrapper files) or the secret changed, and
  stops the app on delete.

Everything that talks to Modal's servers goes through one seam, `ModalClient`; the real
implementation `ModalSdkClient` uses the SDK's async forms. A missing Modal token is caught
by `require_modal_credentials` before either provider calls the seam.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.dynamic import Resource as DynamicResource
from pulumi.runtime import rpc

from components.config import StackConfig
from components.modal_app import AppSpec, SpecError, source_hash, wrapper_requirements
from components.modal_output import with_modal_output
from components.plan import serving_plan
from components.secrets import MODAL_PROXY_TOKEN, SECRETS

T = TypeVar("T")


# ------------------------------------------------------------------ the seam


@dataclass(frozen=True)
class Deployed:
    app_id: str
    # Web function name → its URL (`https://<workspace>--<app>-<function>.modal.run`).
    urls: dict[str, str] = field(default_factory=dict)


class ModalClient(Protocol):
    """The boundary to Modal's servers: the only thing tests replace."""

    async def upsert_secret(self, name: str, values: Mapping[str, str]) -> bool:
        """Write every key; True when this call created the secret, False when it existed already."""
        ...

    async def delete_secret(self, name: str) -> None: ...

    async def deploy(self, spec: AppSpec) -> Deployed: ...

    async def stop(self, app_name: str) -> None: ...

    async def predownload(self, spec: AppSpec) -> None:
        """Run the deployed app's `download_weights` once, to its end (modal.predownload)."""
        ...


class ModalSdkClient:
    """`ModalClient` on the Modal SDK (1.6), async forms; credentials from env or ~/.modal.toml."""

    async def upsert_secret(self, name: str, values: Mapping[str, str]) -> bool:
        from modal.exception import AlreadyExistsError

        import modal

        env = dict(values)
        try:
            await modal.Secret.objects.create.aio(name, env)  # allow_existing=False: raises if it exists
            return True
        except AlreadyExistsError:
            # An existing secret (adopted, or ours from an earlier run): overwrite every key.
            await modal.Secret.from_name(name).update.aio(env)
            return False

    async def delete_secret(self, name: str) -> None:
        import modal

        await modal.Secret.objects.delete.aio(name, allow_missing=True)

    async def deploy(self, spec: AppSpec) -> Deployed:
        from components.modal_app import load_app

        module = load_app(spec)
        # Taken now: a later load_app re-executes the module in place.
        app, functions = module.app, {name: getattr(module, name) for name in spec.web_functions}
        # Build logs to the provider's stderr; a failed build's last lines go with its error.
        await with_modal_output(app.deploy.aio(name=spec.app_name, tag=f"spec-{spec.digest[:12]}"))
        urls = {}
        for name, function in functions.items():
            url = await function.get_web_url.aio()
            if url:
                urls[name] = url
        return Deployed(app_id=app.app_id or "", urls=urls)

    async def predownload(self, spec: AppSpec) -> None:
        import modal

        function = await modal.Function.from_name(spec.app_name, PREDOWNLOAD_FUNCTION).hydrate.aio()
        await with_modal_output(function.remote.aio())

    async def stop(self, app_name: str) -> None:
        from modal.exception import NotFoundError

        import modal

        try:
            app = await modal.App.lookup.aio(app_name)
        except NotFoundError:
            return  # already gone
        await app.stop.aio()


# ------------------------------------------------------------- credentials


class ModalCredentialsMissing(RuntimeError):
    pass


CREDENTIALS_HELP = (
    "no Modal token: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or run `modal token new` once "
    "(it writes ~/.modal.toml). Nothing was deployed."
)


def modal_credentials_present(env: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """As the Modal SDK looks them up: the env pair, else the active profile of ~/.modal.toml."""
    env = os.environ if env is None else env
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    path = Path(env.get("MODAL_CONFIG_PATH") or (home or Path.home()) / ".modal.toml")
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    name = env.get("MODAL_PROFILE") or next(
        (k for k, v in profiles.items() if isinstance(v, dict) and v.get("active")), "default"
    )
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        return False
    return bool(
        (env.get("MODAL_TOKEN_ID") or profile.get("token_id"))
        and (env.get("MODAL_TOKEN_SECRET") or profile.get("token_secret"))
    )


def require_modal_credentials() -> None:
    if not modal_credentials_present():
        raise ModalCredentialsMissing(CREDENTIALS_HELP)


# ---------------------------------------------------------------- providers


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Provider methods are synchronous; run one seam call to completion."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:  # called from inside a loop: use a fresh one
        return pool.submit(asyncio.run, coro).result()


def _unknown(value: Any) -> bool:
    return value is rpc.UNKNOWN or value == rpc.UNKNOWN


def _reveal(value: Any) -> Any:
    """Secret inputs reach a dynamic provider wrapped (`{sig: secret, value: …}`)."""
    return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value


def _secret_values(props: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in _reveal(props["values"]).items()}


def _without_provider(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k != "__provider"}


class _ModalProvider(ResourceProvider):
    """Holds no client: the real one is built inside each method (the provider is pickled)."""

    def __init__(self, client: ModalClient | None = None) -> None:
        super().__init__()
        self._client = client

    def client(self) -> ModalClient:
        require_modal_credentials()
        return self._client if self._client is not None else ModalSdkClient()


class ModalSecretProvider(_ModalProvider):
    """A named Modal Secret. Outputs: name, keys, version (bumped on each change), values (secret)
    and `created`: whether this stack created it. Only a secret the stack created is deleted with
    it; an adopted one (it existed before the stack's first `pulumi up`) is left as it is."""

    @staticmethod
    def _outs(name: str, values: dict[str, str], version: int, created: bool) -> dict[str, Any]:
        # Returned wrapped as a secret: the engine stores the values encrypted, never in plain state.
        return {"name": name, "values": rpc.wrap_rpc_secret(values), "keys": sorted(values), "version": version,
                "created": created}  # fmt: skip

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = self.client()
        values = _secret_values(props)
        created = _run(client.upsert_secret(props["name"], values))
        return CreateResult(props["name"], self._outs(props["name"], values, 1, bool(created)))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["name"] if olds.get("name") != news.get("name") else []
        new_values = _reveal(news.get("values"))
        changed = bool(replaces) or _unknown(new_values) or _reveal(olds.get("values")) != new_values
        return DiffResult(changes=changed, replaces=replaces, stables=["name"] if not replaces else [],
                          delete_before_replace=False)  # fmt: skip

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        client = self.client()
        values = _secret_values(news)
        _run(client.upsert_secret(news["name"], values))
        # The same name (a rename is a replace): who created it does not change.
        return UpdateResult(
            self._outs(news["name"], values, int(olds.get("version") or 0) + 1, olds.get("created") is True)
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("created") is not True:
            # Adopted, or recorded before the stack tracked it: not the stack's to delete.
            pulumi.log.info(f"Modal Secret {props['name']!r} was not created by this stack; left in place")
            return
        client = self.client()
        _run(client.delete_secret(props["name"]))


PREDOWNLOAD_FUNCTION = "download_weights"


def predownload_key(spec: AppSpec) -> str | None:
    """What the Volume holds after `download_weights` ran: the model at its revision (None: off)."""
    return f"{spec.model_id}@{spec.model_revision or 'default-branch'}" if spec.predownload else None


# What makes a deployed app out of date.
APP_TRIGGERS = ("app_name", "spec_hash", "source_hash", "secret_version")


class ModalAppProvider(_ModalProvider):
    """A deployed Modal app. id = the app's name; outputs add app_id and the web URLs."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if not _unknown(news.get("spec")):
            try:
                AppSpec.from_dict(news["spec"])
            except (SpecError, TypeError, KeyError) as error:
                failures.append(CheckFailure("spec", str(error)))
        return CheckResult(news, failures)

    def _deploy(self, props: dict[str, Any], olds: Mapping[str, Any] | None = None) -> dict[str, Any]:
        client = self.client()
        spec = AppSpec.from_dict(props["spec"])
        deployed = _run(client.deploy(spec))
        entry = deployed.urls.get(spec.web_functions[0])
        # Once per model and revision, not on every redeploy: the Volume keeps what it downloaded.
        downloaded = (olds or {}).get("predownloaded")
        if (key := predownload_key(spec)) is not None and key != downloaded:
            _run(client.predownload(spec))
            downloaded = key
        return {
            "predownloaded": downloaded,
            **_without_provider(props),
            "app_id": deployed.app_id,
            "urls": dict(deployed.urls),
            "url": entry,
            "openai_base_url": f"{entry}/v1" if entry else None,
        }

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._deploy(props)
        return CreateResult(props["app_name"], outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in APP_TRIGGERS if _unknown(news.get(k)) or olds.get(k) != news.get(k)]
        replaces = ["app_name"] if "app_name" in changed else []
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._deploy(news, olds))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        client = self.client()
        _run(client.stop(props["app_name"]))


# ---------------------------------------------------------------- resources


class ModalSecret(DynamicResource, module="modal", name="Secret"):
    """The named Modal Secret the app's containers read their keys from."""

    version: pulumi.Output[int]
    keys: pulumi.Output[list[str]]

    def __init__(self, name: str, secret_name: str, values: pulumi.Input[dict[str, str]],
                 opts: pulumi.ResourceOptions | None = None, *, client: ModalClient | None = None) -> None:  # fmt: skip
        opts = pulumi.ResourceOptions.merge(opts, secret_resource_options())
        props = {"name": secret_name, "values": pulumi.Output.secret(values), "keys": None, "version": None,
                 "created": None}  # fmt: skip
        super().__init__(ModalSecretProvider(client), name, props, opts)


class ModalApp(DynamicResource, module="modal", name="App"):
    """The deployed Modal app (`modal deploy`, `modal app stop` on delete)."""

    app_id: pulumi.Output[str]
    urls: pulumi.Output[dict[str, str]]
    url: pulumi.Output[str]
    openai_base_url: pulumi.Output[str]

    def __init__(self, name: str, spec: AppSpec, app_source_hash: str, secret_version: pulumi.Input[int],
                 opts: pulumi.ResourceOptions | None = None, *, client: ModalClient | None = None) -> None:  # fmt: skip
        props = app_inputs(spec, app_source_hash, secret_version)
        props.update({"app_id": None, "urls": None, "url": None, "openai_base_url": None, "predownloaded": None})
        super().__init__(ModalAppProvider(client), name, props, opts)


def secret_resource_options() -> pulumi.ResourceOptions:
    # Values are secret inputs already; this keeps them encrypted in the outputs of state too.
    return pulumi.ResourceOptions(additional_secret_outputs=["values"])


def app_inputs(spec: AppSpec, app_source_hash: str, secret_version: Any) -> dict[str, Any]:
    return {
        "app_name": spec.app_name,
        "architecture": spec.architecture,
        "spec": spec.to_dict(),
        "spec_hash": spec.digest,
        "source_hash": app_source_hash,
        "secret_version": secret_version,
    }


def secret_env(values: Mapping[str, str | None]) -> dict[str, str]:
    """Stack secrets → the Modal Secret's keys; unset ones are "" (the wrapper reads "" as unset)."""
    env: dict[str, str] = {}
    for key in (*SECRETS, *MODAL_PROXY_TOKEN):  # the old deployments' names too, for users' scripts
        for name in (key.env, *key.aliases):
            env[name] = values.get(key.name) or ""
    return env


def app_name_for(config: StackConfig, stack: str) -> str:
    return config.modal.app_name or f"vllm-deploy-{stack}"


def secret_name_for(config: StackConfig, stack: str) -> str:
    """Each stack its own Modal Secret: two stacks never overwrite (or delete) each other's keys."""
    return config.modal.secret_name or f"vllm-secrets-{stack}"


def app_spec(config: StackConfig, stack: str) -> AppSpec:
    return AppSpec.from_plan(
        serving_plan(config),
        config.modal,
        app_name=app_name_for(config, stack),
        secret_name=secret_name_for(config, stack),
        wrapper_requirements=wrapper_requirements(),
    )


# --------------------------------------------------------------- component


class ModalDeployment(pulumi.ComponentResource):
    """A whole stack on Modal: the named secret, then the app deployed with it."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        secret_values: Mapping[str, pulumi.Output[str] | None],
        opts: pulumi.ResourceOptions | None = None,
        *,
        client: ModalClient | None = None,
    ) -> None:
        try:
            spec = app_spec(config, pulumi.get_stack())
        except SpecError as error:
            raise pulumi.RunError(f"invalid Modal stack config\n{error}") from None
        if not pulumi.runtime.is_dry_run() and client is None and not modal_credentials_present():
            # Before any resource is registered; the providers check again (destroy runs without this).
            raise pulumi.RunError(CREDENTIALS_HELP)
        super().__init__("vllm-deploy:modal:Deployment", name, None, opts)
        self.spec = spec

        inputs = {k: v if v is not None else "" for k, v in secret_values.items()}
        values = pulumi.Output.all(**inputs).apply(secret_env) if inputs else secret_env({})
        self.secret = ModalSecret(
            f"{name}-secret", spec.secret_name, values, pulumi.ResourceOptions(parent=self), client=client
        )
        self.app = ModalApp(
            f"{name}-app",
            spec,
            source_hash(),
            self.secret.version,
            pulumi.ResourceOptions(parent=self, depends_on=[self.secret]),
            client=client,
        )
        urls = self.app.urls
        self.outputs: dict[str, Any] = {
            "modal_app": spec.app_name,
            "architecture": spec.architecture,
            "app_url": self.app.url,
            "openai_base_url": self.app.openai_base_url,
            "vllm_url": urls.apply(lambda u: (u or {}).get("serve_vllm")),
            "served_model": spec.served_model_name,
            "gpu": spec.gpu,
            "scale_to_zero_after_seconds": spec.scaledown_window or 0,
            "modal_secret": spec.secret_name,
            "logs_command": f"modal app logs {spec.app_name}",
        }
        self.register_outputs(self.outputs)
