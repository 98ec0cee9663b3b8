"""The image's entrypoint flags outside a container: pulsewatch on a free loopback port, and
the HEALTHCHECK binary against it (healthy and ready; a 404 and a closed port exit 1); then
SIGTERM must stop pulsewatch with exit 0.
"""
import signal
import socket
import subprocess
import time

HEALTHCHECK_SOURCE = "src/bin/healthcheck.rs"
STARTUP = 20  # seconds until pulsewatch must be healthy
SHUTDOWN = 40  # seconds pulsewatch may take to stop on SIGTERM (its grace period is 30 s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_image_flags(pulsewatch, healthcheck, cmd, image_config, config, log, dockerfile, fail):
    """`cmd` is the image's CMD; its `--config.file=<image_config>` is pointed at `config`, the
    image's config rebuilt outside it; pulsewatch's stderr goes to `log`."""
    def check(*args):
        return subprocess.run([healthcheck, *args], capture_output=True, text=True).returncode

    port = free_port()
    address = f"127.0.0.1:{port}"
    flags = [a.replace(image_config, str(config)) for a in cmd]
    flags = [f"--web.listen-address={address}" if a.startswith("--web.listen-address") else a for a in flags]
    proc = subprocess.Popen([pulsewatch, *flags], stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + STARTUP
        while check(address) != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                why = log.read_text() if proc.poll() is not None else "timeout"
                fail(HEALTHCHECK_SOURCE, f"never healthy against pulsewatch on {address}: {why}")
                break
            time.sleep(0.2)
        else:
            if check(address, "/-/ready") != 0:
                fail(HEALTHCHECK_SOURCE, "/-/ready is not 200")
            if check(address, "/no-such-path") != 1:
                fail(HEALTHCHECK_SOURCE, "a 404 does not exit 1")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=SHUTDOWN)
            if code != 0:
                fail(dockerfile, f"pulsewatch with the image's flags exited {code} on SIGTERM")
        except subprocess.TimeoutExpired:
            proc.kill()
            fail(dockerfile, "pulsewatch with the image's flags did not stop on SIGTERM")
    if check(address) != 1:
        fail(HEALTHCHECK_SOURCE, "a closed port does not exit 1")
