"""The compiled parts, both optional: the NMEA fast path's plain cases
(firmware_host/values/_nmea_c.c) and decoded fields written as JSON
(firmware_host/values/_json_c.c, with yyjson's Schubfach vendored under
values/schubfach/).

Where no C compiler or Python headers are found, the build says so and installs
without them, and the Python beside each gives the same results (tests hold
them equal), slower. Everything else is in setup.cfg.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "firmware_host.values._nmea_c",
            ["firmware_host/values/_nmea_c.c"],
            optional=True,
        ),
        Extension(
            "firmware_host.values._json_c",
            ["firmware_host/values/_json_c.c"],
            include_dirs=["firmware_host/values"],
            depends=["firmware_host/values/schubfach/schubfach.h"],
            optional=True,
        ),
    ]
)
