export const metadata = { title: 'next-image-sidecar example' }

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: 'system-ui, sans-serif', margin: 0, padding: 24, background: '#fafafa' }}>{children}</body>
    </html>
  )
}
