"""The README's two commands are what CI runs: keep them from drifting."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_the_two_commands():
    demo, tests = readme_commands()[:2]
    assert demo.endswith("pip install -e . && python -m tcpframe demo")
    assert tests.endswith("pip install -e '.[test]' && pytest")


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e . && python -m tcpframe demo" in ci
    assert "pip install -q -e '.[test]'" in ci and "\n        pytest\n" in ci


def test_the_asyncio_example_runs_as_printed():
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    section = text.split("## asyncio", 1)[1]
    code = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["HELLO", "[b'A', b'B', b'C']"]
