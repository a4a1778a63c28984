"""``cps-tiles serve``: stores over HTTP as Deep Zoom and IIIF Image API 3.0 tiles, with a viewer.

    iiif.py      IIIF Image API 3.0: request parsing and info.json (pure functions)
    deepzoom.py  Deep Zoom: the .dzi descriptor and tile geometry (pure functions)
    render.py    a region of the image at an output size, from the best stored level; encoding
    app.py       the ASGI application: routes, caching headers, errors, the decode thread pool
    static/      the browser viewer (no third-party code, nothing fetched at run time)
"""

#: decoded chunks kept in memory by a server, all stores together (MB)
DEFAULT_CACHE_MB = 512
#: one request may ask for this many output pixels (IIIF maxArea; ServerConfig.max_decode bounds its decode)
DEFAULT_MAX_AREA = 4096 * 4096
