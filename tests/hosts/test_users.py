"""The non-root deploy user: key login only, passwordless sudo (roles/base)."""

import pytest

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def deploy_user(settings):
    return settings.deploy_user


def test_deploy_user_exists_with_a_login_shell(host, deploy_user):
    user = host.user(deploy_user)
    assert user.exists
    assert user.shell == "/bin/bash"
    assert user.home == f"/home/{deploy_user}"


def test_deploy_user_has_no_usable_password(host, deploy_user):
    assert host.user(deploy_user).password.startswith(("!", "*"))


def test_deploy_user_has_authorized_keys_only_it_can_write(host, deploy_user):
    keys = host.file(f"/home/{deploy_user}/.ssh/authorized_keys")
    assert keys.user == deploy_user
    assert keys.mode & 0o077 == 0
    assert keys.content_string.strip()


def test_deploy_user_runs_sudo_without_password(host, deploy_user):
    with host.sudo(deploy_user):
        assert host.check_output("sudo -n id -u") == "0"


def test_sudoers_pass_visudo(host, deploy_user):
    assert host.run("visudo -c").rc == 0
    assert host.file(f"/etc/sudoers.d/mcpdeploy-{deploy_user}").mode == 0o440


def test_deploy_user_logs_in_with_key_and_sudoes(host, ssh_client, deploy_user):
    alias = host.backend.get_hostname()
    result = ssh_client("-o", "BatchMode=yes", "-l", deploy_user, alias, "sudo", "-n", "id", "-u")
    if "Permission denied" in result.stderr:
        pytest.fail(f"the operator's key is not among {deploy_user}'s keys: {result.stderr}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
