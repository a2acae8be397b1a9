#!/usr/bin/python3
"""test_readme_keys.py: README's config key list agrees with `pmoe keys`.

Every key `pmoe keys` prints is named in README (in its section's bullet of
"The config" as `key`, or anywhere as `section.key`), and wherever that
bullet gives the key a default in brackets ([0.2], [auto: ...], [10000,
...]) it is the default `pmoe keys` prints (numbers compared as numbers).
A key added to the table without its README line, or a default changed on
one side only, fails here with the key named.

Usage: test_readme_keys.py PMOE README.md"""
import re
import subprocess
import sys


def keys_of(pmoe):
    text = subprocess.run([pmoe, "keys"], check=True, capture_output=True, text=True).stdout
    section, out = None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line[1:-1]
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            out.append((section, key, value))
    return out


def section_bullets(readme):
    start = readme.index("## The config")
    end = readme.index("\n## ", start + 1)
    config = readme[start:end]
    bullets = {}
    for match in re.finditer(r"^- `\[(\w+)\]`(.*?)(?=^- `\[|^\S|\Z)", config, re.M | re.S):
        bullets[match.group(1)] = " ".join(match.group(2).split())
    return bullets


def documented_default(bullet, key, others):
    """The bracketed default after `key` in its bullet, before the next key
    or the next '; ' (None where the bullet gives none)."""
    at = bullet.find("`%s`" % key)
    if at < 0:
        return None
    rest = bullet[at + len(key) + 2:]
    ends = [rest.find("; ")] + [rest.find("`%s`" % other) for other in others if other != key]
    ends = [e for e in ends if e >= 0]
    segment = rest[:min(ends)] if ends else rest
    match = re.search(r"\[([^\]:,]*)", segment)
    return match.group(1).strip() if match else None


def same(documented, printed):
    try:
        return float(documented) == float(printed)
    except ValueError:
        return documented == printed


def main():
    pmoe, readme_path = sys.argv[1], sys.argv[2]
    readme = open(readme_path, encoding="utf-8").read()
    bullets = section_bullets(readme)
    keys = keys_of(pmoe)
    failures, checked = [], 0
    for section, key, value in keys:
        bullet = bullets.get(section, "")
        others = [k for s, k, _ in keys if s == section]
        if "`%s`" % key not in bullet and "`%s.%s" % (section, key) not in readme:
            failures.append("%s.%s: not in README" % (section, key))
            continue
        documented = documented_default(bullet, key, others)
        if documented is None:
            continue
        checked += 1
        if not same(documented, value):
            failures.append("%s.%s: README says [%s], pmoe keys %s" % (section, key, documented,
                                                                        value))
    print("%d keys, %d documented defaults compared" % (len(keys), checked))
    for line in failures:
        print("FAIL: " + line)
    return 1 if failures or checked < len(keys) // 2 else 0


if __name__ == "__main__":
    sys.exit(main())
