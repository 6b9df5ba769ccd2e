"""Loopline's container images, built without Docker.

`plan` is pure: from the inputs read off disk it derives content hashes, tags and the exact
commands. `inputs` reads those inputs (the build context, apt sources, pip configuration);
`runner` carries the commands out with mmdebstrap, podman and skopeo.
"""
