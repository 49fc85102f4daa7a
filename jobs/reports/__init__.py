"""Reports: a data function, a template ``reports/NAME.html``, rendered to HTML, CSV and PDF."""
