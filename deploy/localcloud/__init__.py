"""A small but real OpenStack on loopback, with this project installed.

``python -m deploy.localcloud up`` (``make up``) starts Keystone, Placement,
Nova (API, conductor, scheduler and two libvirt compute hosts over Nova's
fake libvirt) and Horizon with the elastic sizing plugin, seeds it and
prints the dashboard URL and logins.  The README's "Local cloud" section
describes what runs and what is a test fixture.
"""
