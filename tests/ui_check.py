"""What a researcher sees of a sweep in the MLflow UI, checked in a real browser (headless Chromium).

    python -m tests.ui_check [--smoke SWEEP.yaml | --tracking-uri URI --experiment NAME] [--out FOLDER]
    make ui-check                       # the same, on a smoke run of sweeps/samplers.yaml

It serves the store with `mlflow ui` on a free loopback port, opens the experiment's runs table, the sweep's
parent run and its best trial's run in Chromium (`chromium --headless --dump-dom`: the page as rendered after its
scripts ran), saves each page's HTML and a screenshot in --out, and checks that the rendered pages show what the
store holds: the parent run's description links the best trial and lists every trial by name, the git commit is
shown, the best trial's metrics and data sets are on its page, the runs table lists the trials. Exit 0 when every
check holds, else 1 with the failed checks. Needs Chromium (Debian: `apt-get install chromium`); not part of
`make test`, whose machines may lack it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(url: str, out: Path, name: str, wait_ms: int = 20_000, height: int = 1400) -> str:
    """The page's DOM after its scripts ran for `wait_ms` of virtual time; its HTML and a screenshot (a window
    `height` pixels tall: charts below the window are not drawn) go to `out`."""
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size=1600,{height}", f"--virtual-time-budget={wait_ms}"]  # fmt: skip
    html = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    (out / f"{name}.html").write_text(html)
    subprocess.run([*flags, f"--screenshot={out / f'{name}.png'}", url], capture_output=True, timeout=180)
    return html


class Browser:
    """Headless Chromium driven through its DevTools protocol over a pipe (`--remote-debugging-pipe`: commands
    as JSON on fd 3, answers and events on fd 4, each ended by a NUL), for what `--dump-dom` cannot do: press
    keys on a rendered page and read it again."""

    def __init__(self, height: int = 1400):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def as_fds_3_and_4() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-pipe",
             f"--window-size=1600,{height}", "about:blank"],
            preexec_fn=as_fds_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._next_id, self._buffer, self.session = 0, b"", None

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # events arrive in between: skip them
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float):
        """The value of `expression` once it is truthy, or its last value after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(1)
        return value

    def press(self, key: str, key_code: int) -> None:
        """A key pressed and released on the focused element."""
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=key_code)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


IMAGES_SHOWN = """[...document.querySelectorAll('img')].filter(i => i.src.includes('images%2F') && i.complete
  && i.naturalWidth > 0).length"""


def images_after_slider_moves(url: str, out: Path) -> dict[str, int]:
    """Open a run's charts, move every step slider to its last step (arrow keys, as a keyboard user would), and
    count the panels without an image and the step-keyed images drawn, before and after. MLflow 3.17's image
    card starts at step 0 and snaps to a logged step only when a single step was logged."""
    browser = Browser(height=16_000)  # charts below the window are not drawn
    try:
        browser.open(url)
        sliders = browser.wait_for("document.querySelectorAll('[role=slider]').length", 120) or 0
        no_image = "document.body.innerText.split('No image logged at this step').length - 1"
        counts = {"sliders": sliders, "empty_before": browser.evaluate(no_image),
                  "images_before": browser.evaluate(IMAGES_SHOWN)}  # fmt: skip
        browser.call("Page.bringToFront")  # keys go to the focused element of the page in front only
        for index in range(sliders):
            slider = f"document.querySelectorAll('[role=slider]')[{index}]"
            browser.evaluate(f"{slider}.focus()")
            for _ in range(1000):  # the thumb's End key is not handled here; arrows step through the marks
                if browser.evaluate(f"{slider}.ariaValueNow === {slider}.ariaValueMax"):
                    break
                browser.press("ArrowRight", 39)
        counts["images_after"] = browser.wait_for(IMAGES_SHOWN, 60) or 0
        counts["empty_after"] = browser.evaluate(no_image)
        browser.screenshot(out / "best_trial_images_last_step.png")
        return counts
    finally:
        browser.close()


def smoke_store(sweep: str, folder: Path) -> tuple[str, str]:
    """Run `sweep` with --smoke into a store in `folder`; (tracking URI, experiment name)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, "-m", "orchestrator", "run", sweep, "--smoke", "--tracking-uri", uri,
               "--set", f"storage_path={folder / 'ray_results'}"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    return uri, experiment.name


def checks(uri: str, experiment_name: str, base: str, out: Path) -> list[tuple[str, bool]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if r.data.tags.get("orchestrator.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best_id = parent.data.tags.get("orchestrator.best_run_id")
    best = next((t for t in trials if t.info.run_id == best_id), None)
    page = f"{base}/#/experiments/{experiment.experiment_id}"

    table = render(f"{page}/runs", out, "runs_table")
    parent_page = render(f"{page}/runs/{parent.info.run_id}", out, "parent_run")
    found = [
        ("the runs table shows the sweep's parent run", parent.info.run_name in table),
        ("the parent run names the best trial", best is not None and best.info.run_name in parent_page),
        ("the parent run links the best trial", best_id is not None and best_id in parent_page),
        ("the parent run lists every trial by name", all(t.info.run_name in parent_page for t in trials)),
        (
            "the parent run shows the git commit",
            parent.data.tags.get("mlflow.source.git.commit", "?")[:7] in parent_page,
        ),
        ("the parent run shows the best trial's metrics", all(k in parent_page for k in list(parent.data.metrics)[:5])),
    ]
    if best is not None:
        best_page = render(f"{page}/runs/{best.info.run_id}", out, "best_trial")
        for wait_ms in (30_000, 60_000, 90_000):  # charts come after the page's own data requests: may need longer
            metrics_page = render(
                f"{page}/runs/{best.info.run_id}/model-metrics", out, "best_trial_metrics", wait_ms, 16_000
            )  # fmt: skip  (the image section comes after every metric's chart)
            if "main-svg" in metrics_page:
                break
        inputs = best.inputs.dataset_inputs if best.inputs else []
        found += [
            ("the best trial's page shows its searched values", all(
                k in best_page for k in best.data.params if k.startswith("sampled."))),
            # The run page shows the first data set by name and the others as "+N".
            ("the best trial's data sets are shown", not inputs or (inputs[0].dataset.name in best_page and
             (len(inputs) == 1 or f"+{len(inputs) - 1}" in best_page))),
            ("the best trial's metric charts are drawn", "eval/" in metrics_page and "main-svg" in metrics_page),
        ]  # fmt: skip
        if best.data.tags.get("mlflow.loggedImages") == "true":
            counts = images_after_slider_moves(f"{page}/runs/{best.info.run_id}/model-metrics", out)
            print(f"image panels: {counts}")
            shown = counts["sliders"] > 0 and counts["images_after"] > 0 and counts["empty_after"] == 0
            found.append(("the best trial's figures show at the slider's last step", shown))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", help="run this sweep file with --smoke into a new store, and check that")
    parser.add_argument("--tracking-uri", help="an existing store (with --experiment)")
    parser.add_argument("--experiment")
    parser.add_argument("--out", type=Path, default=Path("ui-check"), help="where pages and screenshots go")
    args = parser.parse_args()
    if BROWSER is None:
        print("ui_check: no Chromium on the PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:  # the store stays in --out, to be opened with `mlflow ui` afterwards
        uri, experiment = smoke_store(args.smoke, args.out.resolve())
    elif args.tracking_uri and args.experiment:
        uri, experiment = args.tracking_uri, args.experiment
    else:
        parser.error("give --smoke SWEEP, or --tracking-uri and --experiment")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", uri],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, server, 120)
        results = checks(uri, experiment, base, args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for what, ok in results:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(f"pages and screenshots: {args.out.resolve()}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
