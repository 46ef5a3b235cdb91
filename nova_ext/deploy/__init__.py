"""Installs, verifies and removes the elastic sizing extension on a Nova host.

The extension replaces no Nova file: the package is installed with pip, and
two configuration edits plug it in (the paste filter in ``api-paste.ini`` on
API hosts, ``compute_driver`` in ``nova.conf`` on compute hosts). This
package makes those edits reversibly (``files``), proves every piece is
live through Nova's own plug points (``checks``) and offers both as the
``xloud-nova-ext`` command (``cli``).
"""
