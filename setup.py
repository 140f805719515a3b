"""The one compiled part: the NMEA fast path's plain cases (firmware_host/values/_nmea_c.c).

Optional: where no C compiler or Python headers are found, the build says so and
installs without it, and values/nmea_fast.py decodes the same sentences in Python
(the same fields; a test holds the two equal). Everything else is in setup.cfg.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "firmware_host.values._nmea_c",
            ["firmware_host/values/_nmea_c.c"],
            optional=True,
        )
    ]
)
