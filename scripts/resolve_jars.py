"""Resolve the JVM jars (Delta, Kafka connector) from Maven Central once, into a local cache.

Runs `mvn dependency:copy-dependencies` on jvm/pom.xml, then drops every jar pyspark already ships
(same artifact, any version) so the session classpath holds one copy of each library.
Spark sessions built by spark_jobs.spark use the cached folder and never resolve at start-up.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "jvm" / "pom.xml"
SETTINGS = ROOT / "jvm" / "settings.xml"
_VERSIONED = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")


def artifact_name(jar: str) -> str:
    """'delta-storage-4.4.0.jar' -> 'delta-storage'."""
    match = _VERSIONED.match(jar)
    return match.group("artifact") if match else jar


def main() -> int:
    import pyspark

    target = ROOT / ".cache" / "jars"
    stamp = target / ".resolved"
    pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == pom_digest:
        print(f"jars: cached in {target}")
        return 0
    staging = ROOT / ".cache" / "jars.staging"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-s",
        str(SETTINGS),
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    print("jars: resolving Delta and the Kafka connector from Maven Central (once) ...")
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        print("jars: mvn could not resolve jvm/pom.xml; see the Maven output above.", file=sys.stderr)
        return result.returncode
    shipped = {artifact_name(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    kept = []
    for jar in sorted(staging.glob("*.jar")):
        if artifact_name(jar.name) not in shipped:
            shutil.move(str(jar), target / jar.name)
            kept.append(jar.name)
    shutil.rmtree(staging, ignore_errors=True)
    stamp.write_text(pom_digest + "\n")
    print(f"jars: {len(kept)} jars in {target}: {', '.join(kept)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
