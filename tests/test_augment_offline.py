"""Augmentation without WordNet on the machine: a clear error that says how to install it."""
import subprocess
import sys


def test_missing_wordnet_says_how_to_install_it(tmp_path):
    code = "from deepseek_wb.augment import SynonymReplace; SynonymReplace(p=1.0)(['The quick dog jumps.'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"DEEPSEEK_WB_WORDNET": str(tmp_path / "nowhere"), "DEEPSEEK_WB_CACHE": str(tmp_path / "cache"),
                            "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("deepseek_wb.augment.WordNetMissing") and "apt-get install wordnet-base" in last
    assert str(tmp_path / "nowhere") in last
