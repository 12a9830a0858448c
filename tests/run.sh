#!/usr/bin/env bash
#
# Run the test suite: prepare the Python environment exactly as start_app.sh does
# (conda environment, else .venv, created on the first run), add the test tools
# from requirements-dev.txt, then run pytest. Arguments go to pytest.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=start_app.sh
source ./start_app.sh
setup_colours
ensure_env

dev_stamp="$("${PYTHON}" -c 'import sys; print(sys.prefix)')/.requirements-dev.sha256"
dev_hash="$(cat requirements-dev.txt requirements.txt requirements-ray.txt | sha256sum | awk '{print $1}')"
if [[ "$(cat "${dev_stamp}" 2>/dev/null)" != "${dev_hash}" ]]; then
  info "Installing the test tools from requirements-dev.txt..."
  "${PYTHON}" -m pip install --quiet -r requirements-dev.txt
  printf '%s\n' "${dev_hash}" > "${dev_stamp}"
fi

# One torch thread for the test process: two OpenMP threads on two cores that also run the servers
# under test spin at every barrier and make a step up to 30 times slower (docs/PERFORMANCE.md, "CPU
# threads"). The servers the tests start drop these and use the app's own model.cpu_threads.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# Two test processes (pytest-xdist), each taking whole files, longest first (tests/conftest.py): most
# tests wait on a server or a browser they started, so two keep both cores busy. I2V_TEST_PROCESSES=0
# runs everything in this one process. The 30 slowest tests close the report, so a test that starts
# to drag shows in CI's log.
exec "${PYTHON}" -m pytest -n "${I2V_TEST_PROCESSES:-2}" --dist loadfile --durations=30 "$@"
