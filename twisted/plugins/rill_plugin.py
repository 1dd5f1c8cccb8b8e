"""twistd plugin: ``twistd -n rill -c config.ini`` runs Rill's service tree."""

from twisted.application.service import ServiceMaker

rill = ServiceMaker(
    "Rill",
    "rill.service",
    "Mirror, index and stream remote log files over SSH.",
    "rill",
)
