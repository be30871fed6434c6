"""`guardchat` console script: one subcommand per job (`serve` here; the guard, alignment and
feedback commands register theirs in COMMANDS)."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from pydantic_settings import CliSettingsSource

from serve.settings import Settings


def load_settings(args: Sequence[str], prog: str = "guardchat serve") -> Settings:
    """Settings from defaults < YAML (--config or GUARDCHAT_CONFIG) < GUARDCHAT_* env < flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(args)
    cli = CliSettingsSource(Settings, cli_prog_name=prog, cli_parse_args=list(args), cli_kebab_case=True,
                            cli_implicit_flags=True)
    return Settings(_cli_settings_source=cli, **({"config": known.config} if known.config else {}))


def describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "invalid settings:\n" + "\n".join(lines)


def serve(args: Sequence[str]) -> int:
    """Start the guarded chat server (OpenAI API, /metrics, /health)."""
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"guardchat serve: {describe_errors(exc)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"guardchat serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from serve.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port,
                            log_level=settings.server.log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    app.state.guardchat.request_shutdown = lambda: setattr(server, "should_exit", True)
    server.run()
    error = app.state.guardchat.startup_error
    if error:
        print(f"guardchat serve: the engine failed to start: {error}", file=sys.stderr)
        return 1
    return 0


def guard(args: Sequence[str]) -> int:
    """Train, check or evaluate the guard (train | check TEXT | eval)."""
    from guard.cli import main as guard_main

    return guard_main(args)


def align(args: Sequence[str]) -> int:
    """Alignment: SFT -> reward model -> PPO / DPO -> eval from one recipe (STAGE | run)."""
    from alignment.cli import main as align_main

    return align_main(args)


def feedback(args: Sequence[str]) -> int:
    """Human feedback from the chat UI and API (export preference pairs for alignment)."""
    from serve.feedback_cli import main as feedback_main

    return feedback_main(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "serve": serve,
    "guard": guard,
    "align": align,
    "feedback": feedback,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:10s} {fn.__doc__.strip().splitlines()[0]}" for name, fn in COMMANDS.items()]
        print("usage: guardchat COMMAND [options]   (guardchat COMMAND --help for its options)\n\ncommands:\n"
              + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
