"""Deployment tests: Dockerfile, Helm chart, the container's start-up command."""
