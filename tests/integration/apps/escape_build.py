"""User code that tries to leave an image build step (`run_commands`): the commands of an image with its
own root file system run as root of the layer they write. Code in a container can ask for such an
image too (`Sandbox.create(image=...)`), so a build step is a boundary like any container. Each attempt
writes what it got into the image (`/hp-build-escape/`), and `look` returns it; the test
(`test_escape_build.py`) says what must have failed.
"""

import os

import modal

STATE = os.environ.get("HP_ESCAPE_STATE", "/nonexistent")  # the control plane's state directory
MARK = os.environ.get("HP_ESCAPE_MARK", "x")  # a fresh build for each test run

ATTACKS = [
    "mkdir -p /hp-build-escape && cd /hp-build-escape",
    f"echo {MARK} > mark",
    # Through a host process's root (/proc/<pid>/root) to the state directory's token.
    f"for p in /proc/[0-9]*; do cat $p/root{STATE}/token 2>/dev/null; done > proc_root || true",
    "ls -d /proc/[0-9]* | wc -l > pids",
    # Another process's environment (the test starts one with HP_ESCAPE_SECRET in it).
    "for p in /proc/[0-9]*/environ; do cat $p 2>/dev/null; done | tr '\\0' '\\n' | grep -c '^HP_ESCAPE_SECRET=' > environ "
    "|| true",
    # Out of the chroot: a new chroot below, then up past the old root.
    "perl -e 'mkdir \"x\"; chroot \"x\" or exit 1; chdir \"..\" for 1..64; chroot \".\" or exit 1; "
    f"open F, \"<\", \"{STATE}/token\" or exit 1; print <F>' > chroot 2>/dev/null || true",
    # The host's disks, raw.
    "cat /proc/partitions > partitions; for d in $(awk 'NR>2 {print $4}' /proc/partitions); do "
    "[ -b /dev/$d ] && head -c 4096 /dev/$d 2>/dev/null; done | wc -c > raw_disk || true",
    # Mounting: the host's /proc or a fresh one, or a tmpfs over what hides the host.
    "mkdir -p /mnt/hp && (mount -t tmpfs none /mnt/hp 2>/dev/null && echo done || echo refused) > mount",
    # Writing the kernel's knobs.
    "(echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null && echo done > sysctl || echo refused > sysctl",
]

image = modal.Image.debian_slim().run_commands(" && ".join(ATTACKS[:2]), *[
    f"cd /hp-build-escape && {{ {a}; }}" for a in ATTACKS[2:]])
app = modal.App("escape-build", image=image)


@app.function()
def look() -> dict:
    out = {}
    for name in sorted(os.listdir("/hp-build-escape")):
        if os.path.isfile(os.path.join("/hp-build-escape", name)):
            with open(os.path.join("/hp-build-escape", name), errors="replace") as f:
                out[name] = f.read().strip()
    return out
