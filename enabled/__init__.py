"""Horizon "enabled" files of the Elastic Sizing plugin.

Copy or link ``_*.py`` into ``openstack_dashboard/local/enabled/``, or pass
this package to ``openstack_dashboard.utils.settings.update_dashboards``.
"""
