"""``xgir app --model SPEC --images SPEC``: the local web app (module not named app.py: that would shadow
the Typer object ``xgir.cli.app``)."""

from __future__ import annotations

from pathlib import Path

import typer


def _check_port(host: str, port: int) -> None:
    import socket

    from xgir.errors import XgirError

    if not 0 <= port <= 65535:
        raise XgirError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as uvicorn binds: a port left in TIME_WAIT by an app just stopped is free to take again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise XgirError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port or --host") from None


def register(app: typer.Typer) -> None:
    @app.command("app")
    def app_cmd(
        model: str = typer.Option(..., help="model: efficientnet-lite0, an xgir checkpoint (.pt) or "
                                   "package.module:function"),
        weights: Path = typer.Option(None, help="weights for a factory --model: a state_dict (.pt, .safetensors) "
                                     "or a checkpoint of a model built by that factory"),
        images: str = typer.Option(..., help="images: NAME:SPLIT (decoy-digits:train), photos, a file or a glob"),
        feedback: Path = typer.Option(None, help="SQLite feedback store (created if missing; default "
                                      "results/app/feedback-MODEL-IMAGES.db, one per model and image set)",
                                      show_default=False),
        out: Path = typer.Option(Path("results/app"), help="folder for corrected models"),
        n: int = typer.Option(500, help="at most this many images"),
        eval_images: str = typer.Option("auto", "--eval", help="held-out images for accuracy: auto (the test split "
                                        "of NAME:train), none, or an image spec"),
        eval_n: int = typer.Option(1000, help="at most this many held-out images"),
        samples: int = typer.Option(10, help="forward samples of a Bayesian model"),
        seed: int = typer.Option(0, help="seed of an embedded dataset's draw"),
        host: str = typer.Option("127.0.0.1", help="address to bind (local only by default)"),
        port: int = typer.Option(8000, help="port"),
        class_folders: str = typer.Option("names", help="a class folder's labels: folders named as the model's "
                                          "classes (names; ImageNet synsets too) or by class index 0..K-1 (index)"),
        tree: str = typer.Option("auto", help="CWOX confusion tree: head (the head's weights, data-free), images "
                                 "(fitted on the app's images) or auto (images for an embedded data set, else head)"),
    ) -> None:
        """Browse predictions and explanations, annotate irrelevant regions, fine-tune on the feedback."""
        import uvicorn

        from xgir.app import build_state, default_feedback
        from xgir.app.server import LOCAL_HOSTS, create_app

        _check_port(host, port)
        feedback = feedback or default_feedback(model, images)
        ev = None if eval_images == "none" else eval_images
        state = build_state(model, images, feedback, out, n, ev, eval_n, samples, seed, weights=weights,
                            class_folders=class_folders, tree=tree)
        hosts = None if host in ("0.0.0.0", "::") else tuple(dict.fromkeys(LOCAL_HOSTS + (host,)))
        if host not in LOCAL_HOSTS:
            typer.echo(f"warning: listening on {host}: anyone who can reach it can use the app and its files", err=True)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        typer.echo(f"xgir app: {len(state.images)} images, model {state.loaded.spec}, feedback {feedback}")
        typer.echo(f"open http://{shown}:{port}/  (Ctrl-C stops)")
        uvicorn.run(create_app(state, hosts), host=host, port=port, log_level="warning")
