"""A non-editable install, used from outside the checkout, still finds templates, static and migrations."""

import subprocess
import sys
import sysconfig
import textwrap
import venv

import pytest

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_renders_login(tmp_path):
    """Build the wheel, install it in a new venv, and render /login and /static from the installed copy."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("sms_campaigns-*.whl"))
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # The dependencies come from this test run's environment, listed after the new venv's own
    # site-packages so the wheel's copy of webapp wins over the checkout's editable one.
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (__import__("pathlib").Path(site.decode().strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"])

    script = textwrap.dedent(
        f"""
        import webapp
        assert "{target}" in webapp.__file__, webapp.__file__
        secret = "packaged-" + "s3cr3t" * 6
        app = webapp.create_app({{"INSTANCE_PATH": "{tmp_path / 'instance'}", "SECRET_KEY": secret}})
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        assert "Sign in to Campaigns" in page, page[:500]
        assert client.get("/static/css/app.css").status_code == 200
        assert (webapp.resource_dir("migrations") / "env.py").exists()
        print("ok")
        """
    )
    result = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
