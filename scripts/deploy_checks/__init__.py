"""Checks of the deploy files, run by scripts/check_deploy.py."""
