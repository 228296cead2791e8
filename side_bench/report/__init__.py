"""From result rows to a leaderboard: tables, pooling, tests and ranks (leaderboard), the page as
data (page) rendered from templates/ to files (files), plots, galleries, and two attacks
compared candidate by candidate (compare).
"""
