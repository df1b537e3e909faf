"""The README's first-screen code runs as written (in a fresh process and directory)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_session_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "the README shows a sync and an asyncio session"
    sync, async_ = blocks[0], blocks[1]
    script = (
        sync
        + "\nimport asyncio\n\nasync def main():\n"
        + "".join(f"    {line}\n" for line in async_.splitlines())
        + "    return rows\n\n"
        + "rows = asyncio.run(main())\n"
        + "assert post == {'id': 1, 'title': 'hi', 'content': None}, post\n"
        + "assert rows[0]['n'] == 2, dict(rows[0])\n"
        + "print('README OK')\n"
    )
    (tmp_path / "readme_session.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "readme_session.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "README OK" in done.stdout
