# Admin -> Compute -> Elastic Sizing, after Horizon's own compute panels
# (_2110 to _2160).
from xloud_dashboard import exceptions

PANEL = 'elastic_sizing'
PANEL_DASHBOARD = 'admin'
PANEL_GROUP = 'compute'
ADD_PANEL = ('xloud_dashboard.dashboards.admin.elastic_sizing.panel.'
             'ElasticSizing')
ADD_INSTALLED_APPS = ['xloud_dashboard']
ADD_SCSS_FILES = ['xloud_dashboard/scss/elastic_sizing.scss']
ADD_JS_FILES = ['xloud_dashboard/js/elastic_sizing.js',
                'xloud_dashboard/js/host_exposure.js']
ADD_EXCEPTIONS = {
    'recoverable': exceptions.RECOVERABLE,
    'not_found': exceptions.NOT_FOUND,
    'unauthorized': exceptions.UNAUTHORIZED,
}
