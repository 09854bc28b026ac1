"""SQL review: the rendered files for the SQL editor and the locks each statement takes.
"""
