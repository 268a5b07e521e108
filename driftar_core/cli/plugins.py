"""``driftar plugins`` and ``driftar models``: what is installed, without importing torch."""
from __future__ import annotations

import json

import click


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins: distribution, version, hooks, and what each contributed."""
    from driftar_core.plugins import describe_plugins
    infos = describe_plugins()
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for p in infos:
        head = f"{p['name']}  ({p['distribution']} {p['version']})".rstrip()
        if p["status"] == "failed":
            click.echo(f"{head}  FAILED: {p['error']}")
            continue
        click.echo(head)
        click.echo(f"  hooks: {', '.join(p['hooks']) or '-'}")
        for kind, names in p["contributed"].items():
            click.echo(f"  {kind}: {', '.join(names)}")


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--pretrained", is_flag=True, help="Only arch.tag names that have weights in the zoo.")
def models(pattern: str, pretrained: bool) -> None:
    """List registered model architectures matching PATTERN (fnmatch, e.g. 'mar*')."""
    from driftar_core.factory import list_models
    for name in list_models(pattern, pretrained=pretrained):
        click.echo(name)
