"""Packaging for tornado-ws. Runtime dependencies are deliberately few (see README)."""

from setuptools import find_packages, setup

TEST = [
    "pytest>=8,<10",  # pytest-tornasync still uses yield_fixture, removed in pytest 10
    "pytest-tornasync>=0.6",
    "pytest-cov>=5",
    "websockets>=13",  # an independent WebSocket client for black-box tests
    "playwright>=1.40",  # the demo page in a real browser (Debian's chromium; never downloads one)
    "hypothesis>=6.100",
    "ruff>=0.6",
    "mypy>=1.10",
    "redis>=5",  # the Redis broker's tests run against a real redis-server
    "setuptools>=70.1",
    "import-linter>=2.1",  # the layers' import rules, checked by test.sh (setup.cfg [importlinter])  # builds the wheel without the network (tests/test_package.py: bdist_wheel built in)
]

setup(
    name="tornado-ws",
    version="0.1.0",
    description="Real-time session hub on Tornado: JWT-authenticated WebSocket sessions, ordered broadcast, presence",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # static/ (the demo page) sits at the top of the checkout and ships inside the wheel as
    # tornado_ws/static, where config.DEFAULT_STATIC_DIR looks first.
    packages=[*find_packages(include=["tornado_ws", "tornado_ws.*"]), "tornado_ws.static"],
    package_dir={"tornado_ws.static": "static"},
    package_data={
        "tornado_ws": ["py.typed"],
        "tornado_ws.brokers": ["lua/*.lua"],  # the Redis broker's scripts, read at import
        "tornado_ws.static": ["*.html", "*.js", "*.css", "*.ts", "*.png"],
    },
    # Tornado 6.6 to below 7: the oldest and newest of that range are what CI runs (.ci/run).
    # Every Tornado internal we touch is in tornado_ws/transport/tornado_internals.py, each with a
    # canary (tests/transport/test_tornado_internals.py). Not 6.4: it upgrades requests with a
    # missing, malformed or repeated Host header, which 6.5 answers 400; not 6.5: its header parser
    # still takes obs-fold lines (which the fast path leaves to it) and its 426 names versions 7
    # and 8 that we do not speak.
    install_requires=["tornado>=6.6,<7", "pyjwt[crypto]>=2.8", "prometheus-client>=0.20"],
    extras_require={
        "test": TEST,
        "redis": ["redis>=5"],
        # the websockets peer, profiles, the uvloop and orjson rows
        "bench": ["websockets>=13", "py-spy>=0.3.14", "uvloop>=0.19", "orjson>=3.9"],
    },
    entry_points={"console_scripts": ["tornado-ws=tornado_ws.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
        "Typing :: Typed",
    ],
)
