"""Packages for setuptools (the rest is in pyproject.toml): everything under src/, plus the
top-level conf/ shipped inside the wheel as visionlab/conf, where visionlab.app.config looks
when it is not running from a checkout."""

from setuptools import find_namespace_packages, setup

CONF = ["visionlab.conf", *(f"visionlab.conf.{p}" for p in find_namespace_packages("conf"))]

setup(
    packages=[*find_namespace_packages("src", include=["visionlab*", "hydra_plugins*"]), *CONF],
    package_dir={"": "src", "visionlab.conf": "conf"},
    package_data={**{group: ["*.yaml"] for group in CONF}, "visionlab.serve": ["static/*"]},  # the page of GET /
)
