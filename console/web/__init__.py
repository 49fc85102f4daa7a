"""``conveyor web``: the dashboard (SPEC section 9), a Starlette app served by uvicorn.

Every page is a :class:`~console.web.app.Page`: one function loads its data as a plain dict
(the same keys as the CLI's ``--json`` where the CLI has the same view), the HTML route renders
it with a Jinja2 template, and ``/api/<path>`` returns it as JSON. The two cannot drift apart.
"""
