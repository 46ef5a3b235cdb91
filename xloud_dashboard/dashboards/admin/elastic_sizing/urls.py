from django.urls import re_path

from xloud_dashboard.dashboards.admin.elastic_sizing import views

urlpatterns = [
    re_path(r'^$', views.IndexView.as_view(), name='index'),
    re_path(r'^bulk_adjust/$', views.BulkAdjustView.as_view(),
            name='bulk_adjust'),
    re_path(r'^(?P<instance_id>[^/]+)/adjust/$', views.AdjustView.as_view(),
            name='adjust'),
    re_path(r'^(?P<instance_id>[^/]+)/autopilot/$',
            views.AutopilotView.as_view(), name='autopilot'),
    re_path(r'^(?P<instance_id>[^/]+)/history/$',
            views.HistoryView.as_view(), name='history'),
    re_path(r'^flavors/(?P<flavor_id>[^/]+)/minimums/$',
            views.EditMinimumsView.as_view(), name='edit_minimums'),
    re_path(r'^flavors/(?P<flavor_id>[^/]+)/apply_minimums/$',
            views.ApplyMinimumsView.as_view(), name='apply_minimums'),
]
