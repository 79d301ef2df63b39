"""The `medkit` command: a small click group whose verbs are imported only when run.

`medkit --help`, `medkit --version` and `medkit <verb> --help` import no torch: each verb's module
keeps heavy imports inside its functions, and the group lists verbs from the table below
without importing them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

import click

from medkit import __version__, network, quiet
from medkit.errors import MedkitError, MissingExtraError, describe_os_error, shown_path


@dataclass(frozen=True)
class Verb:
    target: str  # "module:attribute" of a click command
    help: str
    extra: str | None = None  # the optional-dependency group the verb needs
    needs: tuple[str, ...] = ()  # top-level modules that extra provides
    hub: bool = True  # may name a hub id (recipe or argument): takes --offline


VERBS: dict[str, Verb] = {
    "validate": Verb("medkit.validate:command", "Check a recipe and report every problem at once."),
    "data": Verb(
        "medkit.data.verb:command",
        "Show rendered, masked training examples and dataset stats.",
        "train",
        ("datasets", "transformers"),
    ),
    "train": Verb(
        "medkit.train.verb:command",
        "Fine-tune a base model with (Q)LoRA from a recipe.",
        "train",
        ("torch", "transformers", "peft", "datasets", "accelerate"),
    ),
    "eval": Verb(
        "medkit.eval.verb:command",
        "Measure base vs tuned vs GGUF on held-out data.",
        "eval",
        ("torch", "transformers", "peft", "datasets", "rouge_score", "sacrebleu"),
    ),
    "merge": Verb(
        "medkit.convert.adapter.merge_cli:command",
        "Merge a run's adapter into its 16-bit base (HF folder).",
        "train",
        ("torch", "transformers", "peft"),
    ),
    "export": Verb(
        "medkit.convert.export_cli:command",
        "Write GGUF files (model, quantized, or LoRA adapter) and a Modelfile.",
        "convert",
        ("gguf", "numpy", "llama_cpp", "jinja2"),
    ),
    "verify": Verb(
        "medkit.convert.verify_cli:command",
        "Check a GGUF against its HF model: next-token agreement, perplexity.",
        "convert",
        ("gguf", "numpy", "llama_cpp", "torch", "transformers"),
    ),
    "chat": Verb(
        "medkit.tui.app:command",
        "Chat offline with an exported GGUF in the terminal.",
        "chat",
        ("llama_cpp", "textual"),
        hub=False,
    ),
    "serve": Verb(
        "medkit.runtime.serve:command",
        "OpenAI-compatible server on 127.0.0.1 for a GGUF.",
        "chat",
        ("llama_cpp", "fastapi", "uvicorn"),
        hub=False,
    ),
}


def missing_module(verb: Verb) -> str | None:
    for mod in verb.needs:
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        verb = VERBS.get(name)
        if verb is None:
            return None
        module_name, attr = verb.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # the verb's module itself needs the extra
            missing = missing_module(verb) or exc.name or "?"
            if missing.startswith("medkit"):
                raise
            return _missing_extra_command(name, verb, missing)
        cmd: click.Command = getattr(module, attr)
        if verb.extra:
            cmd = _guard(cmd, name, verb)
        _add_process_options(cmd, hub=verb.hub)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, verb.help) for name, verb in VERBS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _guard(cmd: click.Command, name: str, verb: Verb) -> click.Command:
    callback = cmd.callback
    if callback is None or getattr(callback, "_medkit_guarded", False):
        return cmd

    def guarded(*args, **kwargs):
        missing = missing_module(verb)
        if missing:
            raise MissingExtraError(name, verb.extra or "all", missing)
        return callback(*args, **kwargs)

    guarded._medkit_guarded = True  # type: ignore[attr-defined]
    cmd.callback = guarded
    return cmd


OFFLINE_HELP = "Never reach a model hub: hub ids in the recipe must already be in the local cache."


def _add_process_options(cmd: click.Command, *, hub: bool) -> None:
    """-v/--verbose on every verb and --offline on those that may name a hub id. `main` reads both from
    the command line before anything is imported (network.start, quiet.start); here click accepts and
    documents them, and --offline also takes effect for a caller that runs the group directly."""
    if any(p.name in ("verbose", "offline") for p in cmd.params):
        return
    cmd.params.append(
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, help=quiet.verbose_option_help())
    )
    if hub:
        cmd.params.append(
            click.Option(
                ["--offline"],
                is_flag=True,
                expose_value=False,
                help=OFFLINE_HELP,
                callback=lambda _ctx, _param, value: network.force_offline() if value else None,
            )  # fmt: skip
        )


def _process_flags(argv: list[str]) -> tuple[str, bool, bool]:
    """(verb, verbose, offline) read from the command line (before a bare ``--``)."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    verb = next((a for a in args if not a.startswith("-")), "medkit")
    verbose = any(a in ("-v", "--verbose") for a in args)
    return (verb if verb in VERBS else "medkit"), verbose, "--offline" in args


def _missing_extra_command(name: str, verb: Verb, module: str) -> click.Command:
    @click.command(name=name, help=verb.help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise MissingExtraError(name, verb.extra or "all", module)

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="medkit")
def cli() -> None:
    """medkit: fine-tune small medical LLMs, export GGUF, run them offline.

    \b
      medkit train recipes/smollm2_demo.toml
      medkit export --gguf q4_0
      medkit chat
    """


def main(argv: list[str] | None = None) -> None:
    debug = bool(os.environ.get("MEDKIT_DEBUG"))
    verb, verbose, offline = _process_flags(list(sys.argv[1:] if argv is None else argv))
    network.start(offline=offline)  # hub closed until a recipe names a hub id; never code from a hub
    quiet.start(verbose=verbose, verb=verb)  # other packages' chatter held back unless -v
    try:
        rv = cli.main(args=argv, prog_name="medkit", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        quiet.failed()
        exc.show()
        sys.exit(exc.exit_code)
    except MedkitError as exc:
        if debug:
            raise
        _fail(f"error: {exc.one_line()}", exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the safety net: a full disk or a read-only folder is the user's to fix
        quiet.failed()
        line = None if debug else environment_failure(exc)
        if line is None:
            raise
        _fail(f"error: {line}", 1)
    sys.exit(rv if isinstance(rv, int) else 0)


def _fail(line: str, code: int) -> None:
    quiet.failed()  # the one line stands alone
    click.echo(line, err=True)
    sys.exit(code)


def environment_failure(exc: BaseException) -> str | None:
    """One line for a failure of the machine rather than of medkit (full disk, read-only, no permission):
    an OSError, or a safetensors SafetensorError carrying os error 28. None for anything else."""
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    st = sys.modules.get("safetensors")  # never imported here: if it is not loaded, it did not fail
    if st is not None and isinstance(exc, getattr(st, "SafetensorError", ())):
        text = str(exc)
        if "No space left on device" in text or "os error 28" in text or "StorageFull" in text:
            where = _traceback_local(exc, ("filename", "path", "filepath"))
            at = f" {shown_path(where)}" if where else ""
            return f"no space left on device, cannot write{at} (free some space or write elsewhere)"
    return None


def _traceback_local(exc: BaseException, names: tuple[str, ...]) -> str | None:
    """The file being written: the innermost str/path local named one of ``names`` along ``exc``'s
    traceback, preferring frames of the library that raised it (safetensors' save_file(..., filename))."""
    found: dict[bool, str] = {}
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        in_lib = str(frame.f_globals.get("__name__", "")).startswith(type(exc).__module__.split(".")[0])
        for name in names:
            value = frame.f_locals.get(name)
            if isinstance(value, (str, os.PathLike)):
                found[in_lib] = os.fspath(value)
                break
        tb = tb.tb_next
    return found.get(True) or found.get(False)


if __name__ == "__main__":  # pragma: no cover
    main()
