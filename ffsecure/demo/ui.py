"""The demo's progress display: one line per phase on stderr (rich), or nothing."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class PhaseUI:
    """A rich list of phases: a spinner on the running one, its time once done,
    site ticks as they finish."""

    def __init__(self, enabled: bool = True, *, total_sites: int | None = None):
        self.enabled = enabled
        self._tasks: dict[str, TaskID] = {}
        self._ticks: dict[str, list[str]] = {}
        self._what: dict[str, str] = {}
        self._lock = threading.Lock()
        self.progress: Progress | None = None
        if enabled:
            self.console = Console(stderr=True)
            self.progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def _label(self, name: str) -> str:
        ticks = self._ticks.get(name, [])
        extra = f"  [dim]({len(ticks)} done: {', '.join(ticks[-3:])})[/dim]" if ticks else ""
        return f"[bold]{name:<15}[/bold] {self._what.get(name, '')}{extra}"

    def start(self, name: str, what: str) -> None:
        with self._lock:
            self._what[name] = what
            if self.progress is not None:
                self._tasks[name] = self.progress.add_task(self._label(name), total=None)

    def tick(self, name: str, item: str) -> None:
        key = name.split()[0] if name.startswith("evaluate") else name
        with self._lock:
            key = next((k for k in reversed(list(self._what)) if k.startswith(key)), key)
            self._ticks.setdefault(key, []).append(item)
            if self.progress is not None and key in self._tasks:
                self.progress.update(self._tasks[key], description=self._label(key))

    def done(self, name: str, seconds: float) -> None:
        with self._lock:
            if self.progress is not None and name in self._tasks:
                self.progress.update(
                    self._tasks[name], total=1, completed=1, description=self._label(name)
                )

    def fail(self, name: str) -> None:
        with self._lock:
            if self.progress is not None and name in self._tasks:
                self.progress.update(self._tasks[name], description=f"[red]{name} failed[/red]")
                self.progress.stop_task(self._tasks[name])

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"  [dim]{text}[/dim]")
