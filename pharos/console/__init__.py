"""The web console at ``/``: pages for technicians (commissioning on a phone), energy
managers (lighting programs and their savings) and operators (alerts, devices,
overrides), served by Pharos itself with no JavaScript build and nothing from the
internet (htmx and the stylesheet are in ``static/``; charts and maps are inline SVG).

``install_console`` mounts it on the API's app, outside the OpenAPI schema; the pages
call the same services and stores as the API routes, and the API's own role checks
decide what each key may do.
"""
